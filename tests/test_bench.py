"""The benchmarks' choice of estimators (experiments/shared/bench.py); timing itself is never tested."""

from __future__ import annotations

import pytest

from experiments.dialog.configs.default import get_config as dialog_config
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
