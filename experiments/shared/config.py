"""The base config every experiment's config starts from, and the checks of config values.

Every field that the shared code (``methods``, ``program``, ``runs``) reads is defined here, so each
experiment's config has it; an experiment's own ``get_config()`` adds its fields and changes defaults.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import ml_collections

OUTER_BATCHES = ("fresh", "target")  # the outer loss's target batch: a second draw, or the inner step's own
RELATED_SAMPLING = ("uniform", "weighted")
ESTIMATORS = ("lookahead", "implicit", "trajectory")  # metadial.estimators.Lookahead, Implicit, Trajectory


class ConfigError(ValueError):
    """A config value (or a workdir) that cannot be used; the message names the field or file and what is
    allowed. The launchers report it in one line, without a traceback."""


def base_config() -> ml_collections.ConfigDict:
    """The fields read by the shared launcher code, with defaults that experiments override."""
    c = ml_collections.ConfigDict()
    # runs
    c.methods = ()  # names from the experiment's method table; a list or "a,b" on the command line
    c.num_seeds = 3
    c.seed = 0  # seeds are seed, seed + 1, ..., seed + num_seeds - 1
    c.train_steps = 1000
    c.log_every = 500
    c.checkpoint_every = 500  # checkpoints under DIR/checkpoints/<run>; a rerun resumes
    c.keep_checkpoints = 2
    c.tensorboard = True  # event files under DIR/tensorboard/ (metrics also in DIR/metrics.jsonl)
    c.pretrain_fraction = 0.5  # pretrain_finetune: this fraction of the steps on related, the rest on target
    # the model's optimizer: Adam after optional global-norm clipping
    c.batch_size = 32  # target (and outer) batch
    c.learning_rate = 1e-3
    c.eps_root = 1e-8  # Adam's eps inside the sqrt: keeps second-order meta-gradients finite
    c.grad_clip = 0.0  # global-norm clipping of the model's gradients; 0 disables
    # weighting (meta methods)
    c.meta_learning_rate = 1e-3  # meta_net's weighting network (Adam)
    c.table_meta_learning_rate = 0.1  # meta_table's per-example logits (Adam, per row)
    c.mwnet_hidden = (100,)  # mwnet: hidden layers of Meta-Weight-Net's MLP on each example's loss (as published)
    c.mwnet_meta_learning_rate = 1e-3  # mwnet's MLP (Adam, the rate of Shu et al.)
    c.normalize_weights = True  # sum(w l) / sum(w) over the related batch; False: mean(w l)
    # > 0: a meta update whose meta-gradient is not finite is skipped (optax.apply_if_finite; the weighting stays
    # as it was, the metrics count it in meta_skipped), up to this many in a row; 0: the run stops on it
    c.meta_max_nonfinite = 0
    # how the meta-gradient is estimated (metadial.estimators): "lookahead" (K simulated steps, below),
    # "implicit" (online implicit differentiation, SOBA: the hypergradient at the inner solution) or
    # "trajectory" (through the last trajectory_steps real steps; one meta update per segment)
    c.estimator = "lookahead"
    c.implicit_learning_rate = 0.005  # implicit: step size of v towards (H + damping) v = grad outer
    c.implicit_damping = 0.01  # implicit: added to the Hessian's diagonal
    # implicit: raise the damping to mirror the most negative curvature of H seen along v (keeps v bounded where
    # H is indefinite, at the price of a more damped, shorter-sighted v; metadial.estimators.Implicit)
    c.implicit_mirror_negative = False
    # implicit: the Gauss-Newton matrix instead of the Hessian (positive semi-definite, so v stays bounded with the
    # damping alone; the model's loss must be a metadial.losses.OutputLoss, as both experiments' are)
    c.implicit_gauss_newton = False
    c.trajectory_steps = 100  # trajectory: real steps per segment (the run's steps are rounded to a multiple)
    # related batches of meta methods: "uniform", or "weighted" (drawn with probability (1 - share) * w / sum(w)
    # + share / N, with importance factors that keep the objective; metadial.sampling), the probabilities
    # recomputed from all related weights every sampling_every steps
    c.related_sampling = "uniform"
    c.sampling_uniform_share = 0.1
    c.sampling_every = 100
    # the outer loss on held-out target data: meta_holdout of the target training dialogs/examples (in
    # round(1 / meta_holdout) seeded folds) serve only the outer loss; 0 keeps the outer loss on training data.
    # The held-out fold rotates every meta_holdout_rotation steps (0: never, so the model never sees it)
    c.meta_holdout = 0.0
    c.meta_holdout_rotation = 0
    # after a meta method's run with a held-out fold: a final fit of a fresh model on all the target data and the
    # related data, weighted by the learned weighting held fixed; the record is the final fit's (``before_refit``
    # keeps the meta run's)
    c.meta_holdout_refit = False
    c.inner_steps = 1  # K simulated steps of the look-ahead
    c.target_in_inner = True  # the simulated step also sees the target batch
    c.fresh_inner_batches = False  # True: the K simulated steps each draw new batches (a longer horizon)
    c.outer_batch = "fresh"  # outer loss on a second target batch ("fresh") or the inner step's ("target")
    c.separate_target_step = False  # True: real related step, then a real target step (the authors' code)
    return c


def as_list(value: Any) -> list:
    """A config list given as a sequence or as a comma-separated string (``--config.methods=a,b``)."""
    items = [value] if isinstance(value, (str, int, float)) else list(value)
    out = []
    for item in items:
        out += [v.strip() for v in item.split(",") if v.strip()] if isinstance(item, str) else [item]
    return out


def _outside(values: list, allowed: Sequence[Any]) -> str | None:
    """The items of ``values`` not in ``allowed`` as text ("nothing" when ``values`` is empty), or None if all are."""
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        return ", ".join(map(str, unknown)) if unknown else "nothing"
    return None


def check_choices(name: str, value: Any, allowed: Sequence[Any]) -> list:
    """``value`` as a non-empty list of items of ``allowed``, or a ``ConfigError`` naming the field."""
    values = as_list(value)
    given = _outside(values, allowed)
    if given:
        raise ConfigError(f"config.{name}: {given} not allowed; allowed: {', '.join(map(str, allowed))}")
    return values


def check_flag_choices(flag: str, value: Any, allowed: Sequence[Any]) -> list:
    """The command-line flag ``--flag``'s ``value`` as a non-empty list of items of ``allowed``, or a
    ``ConfigError`` naming the flag."""
    values = as_list(value)
    given = _outside(values, allowed)
    if given:
        raise ConfigError(f"--{flag}: {given} not known; from: {', '.join(map(str, allowed))}")
    return values


def check_positive(config: ml_collections.ConfigDict, names: Iterable[str], prefix: str = "config.") -> None:
    """A ``ConfigError`` naming the first of ``names`` whose value is not positive."""
    for name in names:
        if config[name] <= 0:
            raise ConfigError(f"{prefix}{name} must be positive, got {config[name]}")


def check_shared(config: ml_collections.ConfigDict, method_names: Sequence[str]) -> list[str]:
    """Checks the base config's fields; returns the methods to run."""
    methods = check_choices("methods", config.methods, method_names)
    if config.train_steps < 0 or config.log_every < 0:
        raise ConfigError(
            f"config.train_steps and config.log_every must be >= 0 (0: the experiment's own rule), got "
            f"{config.train_steps}, {config.log_every}"
        )
    check_positive(
        config,
        [
            "num_seeds",
            "checkpoint_every",
            "keep_checkpoints",
            "batch_size",
            "learning_rate",
            "meta_learning_rate",
            "table_meta_learning_rate",
            "mwnet_meta_learning_rate",
            "inner_steps",
            "trajectory_steps",
            "sampling_every",
        ],
    )
    if config.seed < 0:
        raise ConfigError(f"config.seed must be >= 0, got {config.seed}")
    if config.meta_max_nonfinite < 0:
        raise ConfigError(f"config.meta_max_nonfinite must be >= 0 (0: stop on it), got {config.meta_max_nonfinite}")
    hidden = mwnet_hidden(config)
    if not hidden or min(hidden) <= 0:
        raise ConfigError(f"config.mwnet_hidden must be one or more positive layer sizes, got {config.mwnet_hidden}")
    if config.grad_clip < 0:
        raise ConfigError(f"config.grad_clip must be >= 0 (0 disables clipping), got {config.grad_clip}")
    if not 0.0 < config.pretrain_fraction < 1.0:
        raise ConfigError(f"config.pretrain_fraction must be in (0, 1), got {config.pretrain_fraction}")
    check_choices("estimator", config.estimator, ESTIMATORS)
    if config.estimator != "lookahead" and (config.inner_steps != 1 or config.fresh_inner_batches):
        raise ConfigError(
            f"config.inner_steps and config.fresh_inner_batches are settings of the lookahead estimator; with "
            f"config.estimator={config.estimator!r} leave them at 1 and False"
        )
    if config.implicit_learning_rate <= 0 or config.implicit_damping < 0:
        raise ConfigError(
            f"config.implicit_learning_rate must be positive and config.implicit_damping >= 0, got "
            f"{config.implicit_learning_rate}, {config.implicit_damping}"
        )
    check_choices("related_sampling", config.related_sampling, RELATED_SAMPLING)
    if not 0.0 < config.sampling_uniform_share <= 1.0:
        raise ConfigError(f"config.sampling_uniform_share must be in (0, 1], got {config.sampling_uniform_share}")
    if config.related_sampling == "weighted" and config.checkpoint_every % config.sampling_every:
        raise ConfigError(
            f"config.checkpoint_every={config.checkpoint_every} must be a multiple of config.sampling_every="
            f"{config.sampling_every} with weighted sampling (so a resumed run draws what the uninterrupted one did)"
        )
    if not 0.0 <= config.meta_holdout < 1.0 or config.meta_holdout_rotation < 0:
        raise ConfigError(
            f"config.meta_holdout must be in [0, 1) and config.meta_holdout_rotation >= 0, got "
            f"{config.meta_holdout}, {config.meta_holdout_rotation}"
        )
    if config.meta_holdout_refit and config.meta_holdout == 0:
        raise ConfigError(
            "config.meta_holdout_refit refits on the data a held-out fold kept back; set meta_holdout > 0"
        )
    if config.meta_holdout > 0 and config.outer_batch == "target":
        raise ConfigError("config.meta_holdout > 0 draws the outer batch from held-out data; set outer_batch='fresh'")
    if config.outer_batch not in OUTER_BATCHES:
        raise ConfigError(f"config.outer_batch must be one of {', '.join(OUTER_BATCHES)}, got {config.outer_batch!r}")
    return methods


def mwnet_hidden(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """``config.mwnet_hidden`` as layer sizes (empty if it does not read as integers)."""
    try:
        return tuple(int(h) for h in as_list(config.mwnet_hidden))
    except (TypeError, ValueError):
        return ()


def seeds(config: ml_collections.ConfigDict) -> range:
    """The config's seeds: ``seed, seed + 1, ..., seed + num_seeds - 1``."""
    return range(config.seed, config.seed + config.num_seeds)
