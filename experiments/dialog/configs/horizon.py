r"""The horizon diagnostic: the dialog config's model and optimizer, trained as ``union``, probed and split.

    python -m experiments.dialog.horizon --config=experiments/dialog/configs/horizon.py \
        --workdir=results/dialog_horizon
"""

import ml_collections

from experiments.dialog.configs import fixed_budget


def get_config() -> ml_collections.ConfigDict:
    c = fixed_budget.get_config()
    c.methods = ("union",)  # the run that is probed and split (the diagnostic always trains union)
    c.target_dialogs = (100,)  # one size
    c.num_seeds = 3
    c.horizon = ml_collections.ConfigDict()
    c.horizon.start_step = 1000  # union steps before the arms split
    c.horizon.steps = 2000  # real steps of every arm after start_step
    c.horizon.probe_batches = 64  # batch draws averaged in each one-step look-ahead probe
    c.horizon.probe_steps = (250, 1000, 2000, 3000)  # union steps at which to probe
    c.horizon.kinds = ("ask_slot", "api_call", "options", "extra_information")  # kinds with a drop arm
    # related_weights.json of the main sweep (meta_net's learned weights); "" skips the meta_net_kinds arm
    c.horizon.meta_weights = "results/dialog/related_weights.json"
    return c
