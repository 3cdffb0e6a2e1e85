"""The horizon diagnostic's weighted step and one-step look-ahead (experiments/dialog/horizon.py)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.dialog import horizon as dialog_horizon
from experiments.dialog.configs.horizon import get_config
from experiments.dialog.data import load_data
from experiments.dialog.program import DialogProgram
from metadial.steps import TrainState
from tests import tiny


def test_kind_multiplier_weights_sum_to_the_batch_size_and_survive_an_all_zero_batch():
    kind_of = jnp.array([0, 1, 1, 2])
    related = {"id": jnp.array([0, 1, 2, 3, 3, 1])}
    w = dialog_horizon.kind_multiplier_weights(jnp.array([1.0, 0.0, 2.0]), kind_of, related)
    np.testing.assert_allclose(w, [6 / 5, 0, 0, 12 / 5, 12 / 5, 0], rtol=1e-6)
    np.testing.assert_allclose(dialog_horizon.kind_multiplier_weights(jnp.ones(3), kind_of, related), np.ones(6))
    zero = dialog_horizon.kind_multiplier_weights(jnp.array([1.0, 0.0, 1.0]), kind_of, {"id": jnp.array([1, 2])})
    np.testing.assert_array_equal(zero, [0.0, 0.0])


@pytest.fixture(scope="module")
def tiny_probe():
    config = get_config()
    config.update(dict(max_dialogs=4, eval_batch_size=64, batch_size=8))
    data = load_data(config)
    program = DialogProgram("union", config, data)
    pools = data.train_pools(data.target_train(3, 0))
    return dialog_horizon.HorizonProbe(program, data.related_kind_ids), pools, len(data.kind_names)


def test_weighted_step_with_unit_multipliers_is_the_union_step(tiny_probe):
    probe, pools, num_kinds = tiny_probe
    state = probe.program.init(jax.random.key(0), pools)
    for i in range(3):
        key = jax.random.key(10 + i)
        union, _ = probe.program.train_step(state, key, pools)
        ours = probe.weighted_step(state, key, pools, jnp.ones(num_kinds))
        tiny.assert_trees_close(ours.params, union.params)
        state = union
    # dropping every kind leaves only the target loss: a different step
    dropped = probe.weighted_step(state, key, pools, jnp.zeros(num_kinds))
    union, _ = probe.program.train_step(state, key, pools)
    assert tiny.trees_differ(union.params, dropped.params)


def test_kind_lookahead_gradient_matches_finite_differences_in_float64():
    with jax.enable_x64(True):
        target, related, outer = tiny.make_batches()  # related ids 1, 3, 4, 6
        kind_of = jnp.array([0, 1, 2, 1, 0, 2, 2, 1])  # kinds of the 8 related ids
        optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1, eps_root=1e-8))
        params = tiny.make_params(jax.random.key(3))
        state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
        g = jax.grad(lambda p: jnp.mean(tiny.loss_fn(p, related)))(params)  # one real step: Adam moments != 0
        updates, opt_state = optimizer.update(g, state.opt_state, params)
        state = TrainState(state.step + 1, optax.apply_updates(params, updates), opt_state)
        loss = jax.jit(
            lambda m: dialog_horizon.kind_lookahead_loss(
                tiny.loss_fn, optimizer, m, kind_of, state, target, related, outer
            )
        )
        m = jnp.array([0.7, 1.0, 1.3])
        grad = jax.jit(jax.grad(loss))(m)
        eps = 1e-6
        fd = [(loss(m.at[k].add(eps)) - loss(m.at[k].add(-eps))) / (2 * eps) for k in range(3)]
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-10)
        assert np.all(np.abs(np.asarray(grad)) > 1e-6)


def test_meta_net_kind_means_reads_the_run_of_its_size_and_seed(tmp_path):
    path = tmp_path / "related_weights.json"
    examples = [{"kind": k} for k in ("greeting", "ask_slot", "ask_slot", "api_call")]
    runs = [
        {"method": "meta_table", "target_dialogs": 100, "seed": 0, "weights": [9, 9, 9, 9]},
        {"method": "meta_net", "target_dialogs": 100, "seed": 0, "weights": [0.5, 0.2, 0.4, 0.1]},
    ]
    path.write_text(json.dumps({"examples": examples, "runs": runs}))
    means = dialog_horizon.meta_net_kind_means(str(path), 100, 0, ["api_call", "ask_slot", "greeting"])
    np.testing.assert_allclose(means, [0.1, 0.3, 0.5], rtol=1e-6)
    assert dialog_horizon.meta_net_kind_means("", 100, 0, ["api_call"]) is None
    with pytest.raises(ValueError, match="no meta_net run with target_dialogs=250, seed=0"):
        dialog_horizon.meta_net_kind_means(str(path), 250, 0, ["api_call"])


def test_summary_reports_arms_against_union_per_seed_pair():
    def record(seed, union_loss, drop_loss):
        arm = lambda loss, acc: {
            "curve": {"1": {"dev_loss": loss, "dev_loss_ask_slot": loss}},
            "multipliers": [1, 1],
            "dev_response_accuracy": acc,
            "test_response_accuracy": acc,
            "test_accuracy_by_kind": {"ask_slot": acc},
        }
        return {
            "seed": seed,
            "target_dialogs": 100,
            "start_step": 5,
            "horizon": 1,
            "kinds": ["api_call", "ask_slot"],
            "probe": {"5": {"mean": [1e-3, -2e-3], "sem": [0, 0]}},
            "arms": {"union": arm(union_loss, 0.6), "drop_ask_slot": arm(drop_loss, 0.5)},
        }

    text = dialog_horizon.summarize([record(0, 4.0, 4.5), record(1, 3.0, 3.1)])
    assert "| 5 | 1.00 ± 0.00 | -2.00 ± 0.00 |" in text  # look-ahead gradients x 1e3
    assert (
        "| drop_ask_slot | 0.3000 ± 0.2000 | 0.3000 ± 0.2000 |" in text
    )  # paired differences, then mean ± std (ddof 0)
    assert "| drop_ask_slot | 50.0 ± 0.0 | 50.0 ± 0.0 | 50.0 ± 0.0 |" in text


def test_the_diagnostic_runs_probes_and_arms_and_a_rerun_only_reports(tmp_path):
    config = get_config()
    config.update(dict(max_dialogs=4, target_dialogs=(3,), num_seeds=1, eval_batch_size=64, batch_size=8))
    config.horizon.update(
        dict(start_step=2, steps=3, probe_batches=2, probe_steps=(1, 2), kinds=("ask_slot",), meta_weights="")
    )
    records = dialog_horizon.run(config, str(tmp_path))
    assert len(records) == 1 and set(records[0]["probe"]) == {"1", "2"}
    assert set(records[0]["arms"]) == {"union", "drop_ask_slot"}
    assert set(records[0]["arms"]["union"]["curve"]) == {"1", "3"}
    summary = (tmp_path / "summary.md").read_text()
    assert "| drop_ask_slot |" in summary
    assert dialog_horizon.run(config, str(tmp_path)) == records  # nothing left to run
    other = get_config()
    other.update(dict(max_dialogs=4, target_dialogs=(3,), num_seeds=1, eval_batch_size=64, batch_size=8))
    other.horizon.update(dict(start_step=2, steps=4, probe_batches=2, probe_steps=(1, 2), meta_weights=""))
    with pytest.raises(ValueError, match="the workdir holds runs of a different config"):
        dialog_horizon.run(other, str(tmp_path))


@pytest.mark.parametrize(
    "override, message",
    [
        (dict(steps=0), "config.horizon.steps must be positive"),
        (dict(probe_batches=1), "config.horizon.probe_batches must be >= 2"),
        (dict(meta_weights="/nonexistent.json"), "config.horizon.meta_weights='/nonexistent.json': no such file"),
    ],
)
def test_the_diagnostic_checks_its_settings_before_reading_data(tmp_path, override, message):
    config = get_config()
    config.horizon.update(override)
    with pytest.raises(ValueError, match=message):
        dialog_horizon.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()
