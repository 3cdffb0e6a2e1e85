"""The method table's rows and trainer builders (experiments/shared/methods.py) and the base config's checks
(experiments/shared/config.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.ideal.configs.default import get_config
from experiments.ideal.train import METHODS
from experiments.shared import methods as m
from experiments.shared.config import ConfigError, as_list, base_config, check_shared
from experiments.shared.program import skipped_meta_updates
from metadial import LearningToReweight, MetaReweighting, PlainTrainer, TableWeighting
from metadial.estimators import Implicit, Lookahead
from tests import tiny


def test_two_phase_methods_switch_after_the_pretrain_fraction():
    config = get_config()
    config.train_steps, config.pretrain_fraction = 10, 0.3
    phases = [m.PRETRAIN_FINETUNE.phase(step, 10, config) for step in range(10)]
    assert phases == ["main"] * 3 + ["finetune"] * 7
    assert m.PRETRAIN_FINETUNE.step_batches("main") == (m.RELATED,)
    assert m.PRETRAIN_FINETUNE.step_batches("finetune") == (m.TARGET,)
    assert {m.UNION.phase(step, 10, config) for step in range(10)} == {"main"}
    assert m.PRETRAIN_FINETUNE.first_phase_steps(20, config) == 6 and m.UNION.first_phase_steps(20, config) == 0


@pytest.mark.parametrize(
    "name, trainer, weighting",
    [
        ("union", PlainTrainer, None),
        ("l2rw", LearningToReweight, None),
        ("meta_table", MetaReweighting, TableWeighting),
    ],
)
def test_each_row_builds_its_trainer_from_the_config(name, trainer, weighting):
    config = get_config()
    config.inner_steps, config.normalize_weights, config.estimator = 2, False, "lookahead"
    built, w = METHODS[name].build(m.TrainerParts(tiny.loss_fn, config, 8, lambda: None))  # type: ignore[arg-type]
    assert isinstance(built, trainer) and (w is None if weighting is None else isinstance(w, weighting))
    if isinstance(built, MetaReweighting):
        assert built.estimator == Lookahead(2, include_target=config.target_in_inner) and built.normalize is False
        assert w is not None and w.num_examples == 8
    config.estimator, config.inner_steps = "implicit", 1
    config.implicit_mirror_negative = config.implicit_gauss_newton = True
    built, _ = METHODS[name].build(m.TrainerParts(tiny.loss_fn, config, 8, lambda: None))  # type: ignore[arg-type]
    if isinstance(built, MetaReweighting):
        assert built.estimator == Implicit(
            config.implicit_learning_rate, config.implicit_damping, mirror_negative=True, gauss_newton=True
        )
    assert METHODS[name].meta == (name in ("meta_table", "meta_net"))


def test_base_config_checks_name_the_field():
    config = base_config()
    config.methods = ("union, meta_net",)  # as --config.methods=union,meta_net gives it
    assert check_shared(config, ["union", "meta_net"]) == ["union", "meta_net"]
    assert as_list((1, "2,3")) == [1, "2", "3"]
    for field, value, message in [
        ("methods", ("nope",), "config.methods: nope not allowed"),
        ("inner_steps", 0, "config.inner_steps must be positive"),
        ("pretrain_fraction", 1.0, r"config.pretrain_fraction must be in \(0, 1\)"),
        ("outer_batch", "dev", "config.outer_batch must be one of fresh, target"),
        ("estimator", "exact", "config.estimator: exact not allowed; allowed: lookahead, implicit"),
        ("implicit_damping", -1.0, "config.implicit_learning_rate must be positive and config.implicit_damping"),
        ("fresh_inner_batches", True, "config.inner_steps and config.fresh_inner_batches are settings of the"),
    ]:
        bad = base_config()
        bad.methods = ("union",)
        bad[field] = value
        if field == "fresh_inner_batches":
            bad.estimator = "implicit"
        with pytest.raises(ConfigError, match=message):
            check_shared(bad, ["union"])


def test_a_non_finite_meta_gradient_is_skipped_only_when_the_config_allows_it():
    config = get_config()
    config.estimator, config.inner_steps, config.meta_max_nonfinite = "lookahead", 1, 3
    trainer, weighting = METHODS["meta_table"].build(m.TrainerParts(tiny.loss_fn, config, 8, lambda: None))  # type: ignore[arg-type]
    target, related, outer = tiny.make_batches()
    poisoned = dict(outer, x=outer["x"].at[0, 0].set(jnp.nan))  # the outer loss, so the meta-gradient, is NaN
    params = tiny.make_params(jax.random.key(1))
    state = trainer.init(params, weighting.init(jax.random.key(2), related))
    new, metrics = trainer.step(state, target, related, poisoned)
    assert not np.isfinite(float(metrics["meta_grad_norm"]))
    np.testing.assert_array_equal(new.weighting.meta_params, state.weighting.meta_params)  # update skipped
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new.params))  # the model trained on
    logged = skipped_meta_updates(new, metrics)
    assert float(logged["meta_grad_norm"]) == 0.0 and int(logged["meta_skipped"]) == 4  # the batch's 4 rows
    after, finite = trainer.step(new, target, related, outer)  # a finite meta-gradient is applied, not counted
    assert int(skipped_meta_updates(after, finite)["meta_skipped"]) == 4 and float(finite["meta_grad_norm"]) > 0
    assert tiny.trees_differ(after.weighting.meta_params, new.weighting.meta_params)
    config.meta_max_nonfinite = 0  # the default: the update is applied, so the run's non-finite guard stops it
    trainer, _ = METHODS["meta_table"].build(m.TrainerParts(tiny.loss_fn, config, 8, lambda: None))  # type: ignore[arg-type]
    bad, _ = trainer.step(trainer.init(params, weighting.init(jax.random.key(2), related)), target, related, poisoned)
    assert not np.all(np.isfinite(np.asarray(bad.weighting.meta_params)))
