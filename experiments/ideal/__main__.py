r"""The ideal launcher:

    python -m experiments.ideal [--config=experiments/ideal/configs/default.py] [--config.FIELD=VALUE ...] \
        --workdir=DIR
"""

from experiments.ideal.train import DEFAULT_CONFIG, run
from experiments.shared.cli import run_launcher

if __name__ == "__main__":
    run_launcher(
        run,
        DEFAULT_CONFIG,
        "results.json, summary.md, related_weights.json, metrics, checkpoints",
    )
