"""The benchmarks' choice of estimators and what the dialog bench times (experiments/shared/bench.py,
experiments/dialog/bench.py); no speed is ever asserted."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from experiments.dialog.bench import eval_seconds_by_chunk
from experiments.dialog.configs.default import get_config as dialog_config
from experiments.dialog.data import load_data
from experiments.dialog.program import DialogProgram
from experiments.dialog.train import validate_config as validate_dialog
from experiments.ideal.configs.default import get_config as ideal_config
from experiments.ideal.train import validate_config as validate_ideal
from experiments.shared.bench import BENCH_ESTIMATORS, estimator_config
from experiments.shared.config import ESTIMATORS


def test_every_config_estimator_is_timed_and_gauss_newton_sets_its_flag():
    assert set(ESTIMATORS) <= set(BENCH_ESTIMATORS)
    for name in BENCH_ESTIMATORS:
        for config, validate in ((ideal_config(), validate_ideal), (dialog_config(), validate_dialog)):
            c = estimator_config(config, name)
            validate(c)
            assert c.estimator == name.removesuffix("-gn") and c.implicit_gauss_newton == (name == "implicit-gn")
            assert not config.implicit_gauss_newton  # a copy
    with pytest.raises(ValueError, match="--estimators: 'newton' not known; from: lookahead, implicit"):
        estimator_config(ideal_config(), "newton")


def test_dialog_evaluation_in_candidate_chunks_gives_the_same_answers_and_is_timed():
    config = dialog_config()
    config.update(dict(max_dialogs=4, eval_batch_size=64, batch_size=8, target_dialogs=(3,)))
    data = load_data(config)
    program = DialogProgram("target_only", config, data)
    pools = data.train_pools(data.target_train(3, 0))
    params = program.init(jax.random.key(0), pools).params
    whole = program.correct(params, data.dev, None)
    for chunk in (1, 997):  # one candidate at a time; chunks that do not divide the candidate set
        np.testing.assert_array_equal(program.correct(params, data.dev, chunk), whole)
    timing = eval_seconds_by_chunk(program, params, data.dev, repeats=1)
    assert timing["dev_eval_seconds"] > 0 and timing["dev_eval_seconds_unchunked"] > 0
    assert timing["dev_eval_speedup_from_chunks"] == timing["dev_eval_seconds_unchunked"] / timing["dev_eval_seconds"]


@pytest.mark.parametrize("method", ["target_only", "meta_net"])
def test_a_run_compiles_its_training_step_once(method):
    """The step's output state is replicated over the mesh; a fresh state that is not would be a different
    input signature, and the second call would compile the step again."""
    config = dialog_config()
    config.update(dict(max_dialogs=4, batch_size=8, target_dialogs=(3,)))
    data = load_data(config)
    program = DialogProgram(method, config, data)
    pools = data.train_pools(data.target_train(3, 0))
    step = program.step_fn(pools, train_steps=10, seed=0)
    state = program.init(jax.random.key(0), pools)
    for i in range(3):
        state, _ = step(state, jax.random.fold_in(jax.random.key(1), i), i)
    assert program.train_step._cache_size() == 1
