"""Data parallelism: the meta step on 4 (host) devices equals the step on 1 device."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax
    from metadial import MetaReweighting, TableWeighting, NetWeighting, MLPScorer
    from metadial.estimators import Lookahead
    from metadial.parallel import data_mesh, replicate, shard_batch
    from tests import tiny

    assert jax.device_count() == 4, jax.devices()
    results = {}
    for name, devices in [("one", jax.devices()[:1]), ("four", jax.devices())]:
        mesh = data_mesh(devices)
        for kind in ("table", "net"):
            weighting = (TableWeighting(16) if kind == "table"
                         else NetWeighting(MLPScorer((4,)), lambda b: b["x"]))
            learner = MetaReweighting(tiny.loss_fn, weighting, optax.adam(0.1, eps_root=1e-8), optax.adam(0.05),
                                      estimator=Lookahead(2, include_target=True), normalize=True)
            k = jax.random.split(jax.random.key(0), 3)
            target, outer = tiny.make_batch(k[0], 8), tiny.make_batch(k[1], 8)
            related = tiny.make_batch(k[2], 8, ids=np.arange(8) * 2)
            state = learner.init(tiny.make_params(jax.random.key(1)),
                                 weighting.init(jax.random.key(2), related))
            state = replicate(state, mesh)

            @jax.jit
            def step(state, t, r, o):
                return learner.step(state, shard_batch(t, mesh), shard_batch(r, mesh), shard_batch(o, mesh))

            for _ in range(3):
                state, metrics = step(state, target, related, outer)
            if name == "four":
                placed = jax.jit(lambda b: shard_batch(b, mesh))(related)
                assert len(placed["x"].sharding.device_set) == 4
                assert placed["x"].addressable_shards[0].data.shape == (2, tiny.NUM_FEATURES)
            results[(name, kind)] = jax.tree.leaves((state.params, state.meta_params, metrics))
    for kind in ("table", "net"):
        for a, b in zip(results[("one", kind)], results[("four", kind)]):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=1e-6)
    print("OK")
""")


def test_four_device_meta_step_equals_one_device_step():
    xla_flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4".strip()
    env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")
