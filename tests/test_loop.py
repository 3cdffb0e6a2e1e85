"""The shared training loop: non-finite stops, checkpoints, model selection and metrics lines."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metadial.checkpoint import Checkpointer
from metadial.loop import MetricsLog, NonFiniteError, format_value, progress_line, train_loop


def counting_step(bad_at: int | None = None):
    """A step that adds 1 to the state; its loss becomes NaN from step ``bad_at`` (1-based) on."""

    def step(state, key, step_index):
        new = {"x": state["x"] + 1.0}
        loss = jnp.where(step_index + 1 >= (bad_at or 10**9), jnp.nan, 1.0 / (step_index + 1))
        return new, {"train_loss": loss}

    return step


def test_non_finite_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "ck"), keep=2)
    with pytest.raises(NonFiniteError, match=r"run-a: non-finite train_loss=nan at step 7"):
        train_loop(
            counting_step(bad_at=7),
            {"x": jnp.zeros(())},
            jax.random.key(0),
            num_steps=20,
            name="run-a",
            log_every=1,
            checkpointer=ckpt,
            checkpoint_every=3,
        )
    assert ckpt.latest_step() == 6
    restored = ckpt.restore(
        6,
        {
            "state": {"x": jnp.zeros(())},
            "best": {"state": {"x": jnp.zeros(())}, "score": np.asarray(0.0), "step": np.asarray(0)},
        },
    )
    assert float(restored["state"]["x"]) == 6.0


def test_loop_selects_the_best_evaluation_and_resumes(tmp_path):
    scores = {2: 0.5, 4: 0.9, 6: 0.7, 8: 0.8}
    evaluate = lambda state: scores[int(state["x"])]
    log = MetricsLog(str(tmp_path / "m.jsonl"), None, {"run": "b"})
    common = dict(
        num_steps=8, name="run-b", log_every=2, evaluate=evaluate, eval_every=2, checkpoint_every=2, metrics_log=log
    )
    first = train_loop(
        counting_step(),
        {"x": jnp.zeros(())},
        jax.random.key(0),
        checkpointer=Checkpointer(str(tmp_path / "ck")),
        **common,
    )
    assert (first.best_score, first.best_step, float(first.best_state["x"])) == (0.9, 4, 4.0)
    # a second call with the same checkpoints resumes at the end: nothing is retrained or logged twice
    again = train_loop(
        counting_step(),
        {"x": jnp.zeros(())},
        jax.random.key(0),
        checkpointer=Checkpointer(str(tmp_path / "ck")),
        **common,
    )
    assert (again.resumed_from, again.best_score, again.best_step) == (8, 0.9, 4)
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4, 6, 8] and lines[1]["eval_score"] == 0.9


def test_metrics_log_drops_only_its_own_later_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    a, b = MetricsLog(str(path), None, {"run": "a"}), MetricsLog(str(path), None, {"run": "b"})
    for step in (1, 2, 3):
        a.write(step, {"loss": 1.0})
        b.write(step, {"loss": 2.0})
    a.drop_after(1)
    kept = [(e["run"], e["step"]) for e in map(json.loads, path.read_text().splitlines())]
    assert kept == [("a", 1), ("b", 1), ("b", 2), ("b", 3)]


def test_log_values_are_short_and_small_ones_scientific():
    line = progress_line(
        "run",
        5,
        10,
        12.5,
        75.0,
        {"train_loss": 1.23456, "meta_grad_norm": 4.1e-05, "weight_api_call": 0.2134, "weight_greeting": 0.5},
    )
    assert line == (
        "run step 5/10 | 12.5 steps/s | ETA 1m15s | train_loss=1.2346 meta_grad_norm=4.10e-05\n"
        "  mean weights: api_call 0.21 greeting 0.50"
    )
    assert format_value(0.0) == "0.0000" and format_value(123456.0) == "1.23e+05"


def test_early_stopping_after_patience_evaluations_without_improvement_and_resume(tmp_path):
    scores = {2: 0.5, 4: 0.9, 6: 0.7, 8: 0.8, 10: 0.6, 12: 0.95, 14: 0.1}
    evaluate = lambda state: scores[int(state["x"])]
    common = dict(num_steps=14, name="run-c", log_every=2, evaluate=evaluate, eval_every=2, checkpoint_every=4)
    first = train_loop(
        counting_step(),
        {"x": jnp.zeros(())},
        jax.random.key(0),
        patience=3,
        checkpointer=Checkpointer(str(tmp_path / "a")),
        **common,
    )
    assert (first.best_step, first.stopped_step, float(first.state["x"])) == (4, 10, 10.0)  # 6, 8, 10 not better
    again = train_loop(
        counting_step(),
        {"x": jnp.zeros(())},
        jax.random.key(0),
        patience=3,
        checkpointer=Checkpointer(str(tmp_path / "a")),
        **common,
    )
    assert (again.resumed_from, again.stopped_step, again.best_step) == (10, 10, 4)  # stops again, trains nothing
    # evaluations before patience_from (a first phase) do not count against the patience
    later = train_loop(counting_step(), {"x": jnp.zeros(())}, jax.random.key(0), patience=3, patience_from=7, **common)
    assert (later.best_step, later.stopped_step) == (12, 14)
    whole = train_loop(counting_step(), {"x": jnp.zeros(())}, jax.random.key(0), patience=0, **common)
    assert (whole.best_step, whole.stopped_step) == (12, 14)


def test_segments_of_steps_per_call_log_evaluate_and_stop_after_the_call_that_passes_each_interval(tmp_path):
    calls = []

    def segment(state, key, step_index):  # one call makes 3 steps
        calls.append(step_index)
        return {"x": state["x"] + 3.0}, {"train_loss": jnp.asarray(1.0)}

    scores = {6: 0.5, 12: 0.9, 18: 0.8, 24: 0.7, 30: 0.9}
    log = MetricsLog(str(tmp_path / "m.jsonl"), None, {"run": "s"})
    result = train_loop(
        segment,
        {"x": jnp.zeros(())},
        jax.random.key(0),
        num_steps=36,
        name="run-s",
        log_every=4,
        evaluate=lambda state: scores[int(state["x"])],
        eval_every=6,
        patience=2,
        metrics_log=log,
        steps_per_call=3,
    )
    assert calls == [0, 3, 6, 9, 12, 15, 18, 21]
    assert (result.best_step, result.stopped_step, float(result.state["x"])) == (12, 24, 24.0)
    lines = [json.loads(line) for line in open(tmp_path / "m.jsonl")]
    assert [line["step"] for line in lines] == [6, 9, 12, 18, 21, 24]  # the calls that pass 4, 8, ..., 24
    with pytest.raises(ValueError, match="eval_every=4 must be a multiple of steps_per_call=3"):
        train_loop(segment, {"x": jnp.zeros(())}, jax.random.key(0), num_steps=36, name="x", log_every=1,
                   evaluate=lambda s: 0.0, eval_every=4, steps_per_call=3)  # fmt: skip
