r"""The ideal launcher:

    python -m experiments.ideal [--config=experiments/ideal/configs/default.py] [--config.FIELD=VALUE ...] \
        --workdir=DIR
"""

import os

from experiments.ideal.train import run
from experiments.shared.cli import run_launcher

if __name__ == "__main__":
    run_launcher(
        run,
        os.path.join(os.path.dirname(__file__), "configs", "default.py"),
        "results.json, summary.md, related_weights.json, metrics, checkpoints",
    )
