"""The training loop shared by the launchers: periodic evaluation with best-score model selection,
metrics as JSON lines and TensorBoard scalars, checkpoint/resume, and a stop on non-finite values.

The data-sampling randomness of step ``s`` is ``fold_in(key, s)``: it is a function of the run's key and the
step alone, so a resumed run draws exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from metadial.checkpoint import Checkpointer


class NonFiniteError(FloatingPointError):
    """A loss or metric became NaN or infinite; ``step`` is the step at which it was found."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


@dataclasses.dataclass
class LoopResult:
    state: Any  # the final state
    best_state: Any  # the state with the best evaluation score (the final state when there is no evaluation)
    best_score: float | None
    best_step: int
    resumed_from: int  # the checkpoint step the run resumed from (0: a fresh start)
    stopped_step: int  # the last step trained (num_steps, or earlier when early stopping ended the run)
    carried_seconds: float = 0.0  # wall-clock the run had spent up to the checkpoint it resumed from


class MetricsLog:
    """Appends metrics as JSON lines to ``path`` and, if ``tensorboard_dir`` is set, as TensorBoard scalars
    (tensorboardX: event files without TensorFlow)."""

    def __init__(self, path: str | None, tensorboard_dir: str | None = None, tags: dict[str, Any] | None = None):
        self.path, self.tags = path, dict(tags or {})
        self._writer = None
        if tensorboard_dir:
            from tensorboardX import SummaryWriter  # imported lazily: only runs with a workdir need it

            self._writer = SummaryWriter(tensorboard_dir)

    def drop_after(self, step: int) -> None:
        """Removes this run's lines past ``step`` (written by an interrupted run after its last checkpoint)."""
        if not self.path or not os.path.exists(self.path):
            return
        from metadial.io import atomic_write_text

        kept = []
        with open(self.path) as f:
            for line in f:
                entry = json.loads(line)
                mine = all(entry.get(k) == v for k, v in self.tags.items())
                if not (mine and entry["step"] > step):
                    kept.append(line)
        atomic_write_text(self.path, "".join(kept))

    def write(self, step: int, values: dict[str, float]) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps({**self.tags, "step": step, **values}) + "\n")
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(k, v, step)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def check_finite(values: dict[str, float], step: int, where: str) -> None:
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteError(
            f"{where}: non-finite {', '.join(f'{k}={v}' for k, v in bad.items())} at step {step}; "
            f"the last good checkpoint (if any) is kept",
            step,
        )


def tree_is_finite(tree: Any) -> bool:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
    return all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)


def restore_latest(checkpointer: Checkpointer | None, state: Any) -> tuple[int, Any, dict[str, Any]]:
    """``(step, state, best)`` of the latest checkpoint written by ``train_loop`` (``state`` gives the
    structure), or ``(0, state, no best yet)`` without one; ``best`` holds ``state``, ``score``, ``step``."""
    # the score stays float64 (numpy) so that the reported best score is exactly what ``evaluate`` returned
    best = {"state": state, "score": np.asarray(-np.inf, np.float64), "step": np.asarray(0, np.int64)}
    latest = checkpointer.latest_step() if checkpointer is not None else None
    if checkpointer is None or latest is None:
        return 0, state, best
    start = int(latest)
    restored = checkpointer.restore(start, {"state": state, "best": best})
    return start, restored["state"], restored["best"]


def format_value(value: float) -> str:
    """A metric for the log: 4 decimals, or scientific notation for very small or large values."""
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4f}"
    return f"{value:.2e}"


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def progress_line(name: str, step: int, num_steps: int, rate: float, eta: float, values: dict[str, float]) -> str:
    """One short, labelled log line; ``weight_*`` values go on a second line as ``group value`` pairs."""
    weights = {k[len("weight_") :]: v for k, v in values.items() if k.startswith("weight_")}
    others = " ".join(f"{k}={format_value(v)}" for k, v in values.items() if not k.startswith("weight_"))
    line = f"{name} step {step}/{num_steps} | {rate:.1f} steps/s | ETA {format_duration(eta)} | {others}"
    if weights:
        line += "\n  mean weights: " + " ".join(f"{k} {v:.2f}" for k, v in weights.items())
    return line


def train_loop(
    train_step: Callable[[Any, jax.Array, int], tuple[Any, dict[str, jax.Array]]],
    state: Any,
    key: jax.Array,
    *,
    num_steps: int,
    name: str,
    log_every: int,
    evaluate: Callable[[Any], float] | None = None,
    eval_every: int = 0,
    eval_name: str = "eval_score",
    evals_after: float = 0.0,
    patience: int = 0,
    patience_from: int = 0,
    checkpointer: Checkpointer | None = None,
    checkpoint_every: int = 0,
    metrics_log: MetricsLog | None = None,
    log_metrics: Callable[[Any], dict[str, float]] | None = None,
    steps_per_call: int = 1,
) -> LoopResult:
    """Runs ``train_step(state, fold_in(key, step), step)`` for ``num_steps`` steps.

    Every ``eval_every`` steps (and at the end) ``evaluate(state)`` gives a score, logged as ``eval_name``;
    the best state is kept. Every ``checkpoint_every`` steps (and at the end) the state, the best state and
    its score are saved; if ``checkpointer`` holds a checkpoint, the loop resumes from its latest one. The
    logged ETA counts the remaining steps, the remaining evaluations and ``evals_after`` evaluations' worth
    of work that the caller does after the loop (e.g. the test set).

    Early stopping: with ``patience > 0`` the run ends after ``patience`` evaluations in a row, from step
    ``patience_from`` on, that do not beat the best score (e.g. ``patience_from``: where the last phase of a
    two-phase method starts). The count follows from the best step and the current one, so a resumed run stops
    where the uninterrupted one did.

    With ``steps_per_call > 1`` each call of ``train_step`` makes that many steps (e.g. a segment of real steps
    that ``metadial.estimators.Trajectory`` differentiates through), gets the key of its first step, and
    logging, evaluation and checkpoints happen after the call in which their interval's multiple falls;
    ``num_steps``, ``eval_every`` and ``patience_from`` must then be multiples of ``steps_per_call``.
    """
    for what, value in (("num_steps", num_steps), ("eval_every", eval_every), ("patience_from", patience_from)):
        if steps_per_call < 1 or value % steps_per_call:
            raise ValueError(f"{what}={value} must be a multiple of steps_per_call={steps_per_call} (>= 1)")

    def reached(s: int, every: int) -> bool:  # whether the call that ended at step s passed a multiple of every
        return every > 0 and s // every > (s - steps_per_call) // every

    def stale_evaluations(s: int, best_step: int) -> int:
        first = max(best_step + 1, patience_from)  # evaluations at steps >= first count against patience
        return s // eval_every - (first - 1) // eval_every if s >= first else 0

    def stopping(s: int, best_step: int) -> bool:
        return (
            evaluate is not None
            and patience > 0
            and reached(s, eval_every)
            and stale_evaluations(s, best_step) >= patience
        )

    t_start = time.time()
    start, state, best = restore_latest(checkpointer, state)
    carried = float(checkpointer.info(start).get("seconds", 0.0)) if checkpointer is not None and start else 0.0
    if start:
        logging.info("%s: resumed from the checkpoint of step %d (%.0fs spent before)", name, start, carried)
    if metrics_log is not None:
        metrics_log.drop_after(start)  # lines an interrupted run wrote after its last checkpoint
    step_seconds, eval_seconds, num_evals, steps_timed = 0.0, 0.0, 0, 0
    other_seconds, num_other = 0.0, 0  # logged weight statistics and checkpoint saves, per logging event

    def remaining_evals(s: int) -> int:
        if evaluate is None or eval_every <= 0 or s >= num_steps:
            return 0
        return num_steps // eval_every - s // eval_every + (num_steps % eval_every > 0)

    stopped = num_steps
    if start and stopping(start, int(best["step"])):  # the run had already stopped early before it was resumed
        stopped = start
        logging.info("%s: stopped early at step %d (best step %d)", name, start, int(best["step"]))
    stopping_early = False
    for step in range(start, stopped, steps_per_call):
        t0 = time.time()
        if step == start:
            logging.info("%s: compiling the training step", name)
        state, metrics = train_step(state, jax.random.fold_in(key, step), step)
        if step == start:
            jax.block_until_ready(state)
            logging.info("%s: compiled and ran step %d in %.1fs", name, step + steps_per_call, time.time() - t0)
        else:
            steps_timed += steps_per_call
        s = step + steps_per_call
        at_end = s == num_steps

        logging_now = reached(s, log_every) or at_end
        evaluating = evaluate is not None and (reached(s, eval_every) or at_end)
        saving = checkpointer is not None and checkpoint_every > 0 and (reached(s, checkpoint_every) or at_end)
        if not (logging_now or evaluating or saving):
            if step != start:
                step_seconds += time.time() - t0
            continue
        last = {k: float(v) for k, v in metrics.items()}
        if step != start:
            step_seconds += time.time() - t0
        check_finite(last, s, name)
        if evaluating and evaluate is not None:
            t_eval = time.time()
            score = float(evaluate(state))
            eval_seconds, num_evals = eval_seconds + time.time() - t_eval, num_evals + 1
            last[eval_name] = score
            if score > float(best["score"]):
                best = {"state": state, "score": np.asarray(score, np.float64), "step": np.asarray(s, np.int64)}
            if stopping(s, int(best["step"])) and not at_end:  # early stop: log and checkpoint this step, then end
                stopped, stopping_early = s, True
                logging_now = True
                saving = checkpointer is not None
        t_other = time.time()
        if logging_now and log_metrics is not None:
            last.update({k: float(v) for k, v in log_metrics(state).items()})
        if logging_now or evaluating:
            rate = steps_timed / step_seconds if step_seconds > 0 else 0.0
            per_eval = eval_seconds / num_evals if num_evals else 0.0
            per_other = (other_seconds + time.time() - t_other) / (num_other + 1)
            every = min(e for e in (log_every, eval_every, checkpoint_every) if e > 0)
            eta = (
                ((num_steps - s) / rate if rate > 0 else 0.0)
                + per_eval * (remaining_evals(s) + evals_after)
                + per_other * -(-(num_steps - s) // every)
            )
            logging.info("%s", progress_line(name, s, num_steps, rate, eta, last))
            if metrics_log is not None:  # written before the checkpoint: a resume drops lines past its step
                metrics_log.write(s, last)
        if saving and checkpointer is not None:
            if not tree_is_finite(state):
                raise NonFiniteError(
                    f"{name}: the state holds non-finite values at step {s}; the last good checkpoint (if any) is kept",
                    s,
                )
            checkpointer.save(s, {"state": state, "best": best}, {"seconds": carried + time.time() - t_start})
        other_seconds, num_other = other_seconds + time.time() - t_other, num_other + 1
        if stopping_early:
            logging.info(
                "%s: stopped early at step %d: %d evaluations without a better %s than step %d's",
                name,
                s,
                patience,
                eval_name,
                int(best["step"]),
            )
            break
    if evaluate is None:
        return LoopResult(state, state, None, num_steps, start, num_steps, carried)
    return LoopResult(state, best["state"], float(best["score"]), int(best["step"]), start, stopped, carried)
