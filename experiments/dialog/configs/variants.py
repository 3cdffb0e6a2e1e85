r"""Named variants of the fixed-budget dialog config: ``get_config("NAME")`` is ``fixed_budget.py`` with that
variant's changes.

python -m experiments.dialog.variants --variants=raw_weights,inner_steps_2 --workdir=results/dialog_variants
python -m experiments.dialog --config=experiments/dialog/configs/variants.py:raw_weights --workdir=DIR
"""

import ml_collections

from experiments.dialog.configs import fixed_budget

VARIANTS: dict[str, dict] = {
    # the authors' research code: a real related step, then a real target step; no target in the look-ahead
    "authors_steps": dict(separate_target_step=True, target_in_inner=False),
    "no_target_in_inner": dict(target_in_inner=False),
    "raw_weights": dict(normalize_weights=False),  # mean(w l) instead of sum(w l) / sum(w)
    "meta_lr_1e-2": dict(meta_learning_rate=0.01, num_seeds=1),
    "meta_lr_1e-4": dict(meta_learning_rate=0.0001),
    "inner_steps_2": dict(inner_steps=2),
    "inner_steps_4": dict(inner_steps=4, num_seeds=1),
    "outer_target": dict(outer_batch="target", num_seeds=1),  # outer loss on the simulated step's own batch
    "fresh_batches_2": dict(inner_steps=2, fresh_inner_batches=True),
    "steps_8000": dict(train_steps=8000),  # a longer budget
}


def get_config(name: str) -> ml_collections.ConfigDict:
    if name not in VARIANTS:
        raise ValueError(f"no variant {name!r}; variants: {', '.join(VARIANTS)}")
    c = fixed_budget.get_config()
    c.update(VARIANTS[name])
    return c
