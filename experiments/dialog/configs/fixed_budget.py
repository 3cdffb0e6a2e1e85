r"""The dialog experiment as first run: 3000 steps, dev evaluation every 500, no early stopping (the config of
results/dialog, dialog_variants, dialog_budget and dialog_horizon).

    python -m experiments.dialog --config=experiments/dialog/configs/fixed_budget.py --workdir=results/dialog
"""

import ml_collections

from experiments.dialog.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.train_steps = 3000
    c.eval_every = 500
    c.log_every = 500
    c.patience = 0
    return c
