"""Timing helpers of the benchmark scripts (ratios measured in one process, never in tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

# the estimators the benchmarks time: config.estimator's choices, and implicit with the Gauss-Newton matrix
BENCH_ESTIMATORS = {
    "lookahead": dict(estimator="lookahead"),
    "implicit": dict(estimator="implicit"),
    "implicit-gn": dict(estimator="implicit", implicit_gauss_newton=True),
    "trajectory": dict(estimator="trajectory"),
}


def estimator_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """A copy of ``config`` with the estimator ``name`` of ``BENCH_ESTIMATORS`` (a clear error for others)."""
    if name not in BENCH_ESTIMATORS:
        raise ValueError(f"--estimators: {name!r} not known; from: {', '.join(BENCH_ESTIMATORS)}")
    out = config.copy_and_resolve_references()
    out.update(BENCH_ESTIMATORS[name])
    return out


def median_ms(step: Callable[[Any, jax.Array, Any], tuple[Any, Any]], state: Any, data: Any, repeats: int) -> float:
    """Median wall time (ms) of ``step(state, key, data)`` over ``repeats`` calls, after one compiling call."""
    key = jax.random.key(0)
    state, _ = step(state, key, data)
    jax.block_until_ready(state)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        state, metrics = step(state, jax.random.fold_in(key, i), data)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)
