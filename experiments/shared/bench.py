"""Timing helpers of the benchmark scripts (ratios measured in one process, never in tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


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
