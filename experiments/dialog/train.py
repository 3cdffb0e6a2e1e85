r"""Personalized restaurant reservation from little data plus the related bAbI dialog task 5.

    python -m experiments.dialog [--config=experiments/dialog/configs/default.py] [--config.FIELD=VALUE ...] \
        --workdir=DIR

Target: personalized bAbI dialog task 5 (small set; training subsets of ``target_dialogs`` dialogs). Related:
the original bAbI dialog task 5 training set. Model: MemN2N. Writes ``DIR/results.json`` (one record per
(method, target_dialogs, seed)), ``DIR/summary.md`` and, for weighted methods, ``DIR/related_weights.json``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from experiments.dialog.data import DialogData, load_data
from experiments.dialog.program import METHODS, DialogProgram, accuracies
from experiments.shared.cli import report
from experiments.shared.config import ConfigError, as_list, check_choices, check_positive, check_shared, seeds
from experiments.shared.methods import TARGET
from experiments.shared.program import Pools
from experiments.shared.store import RunStore
from experiments.shared.tables import summary_table
from metadial.data.dialog_tasks import RELATED_SOURCES, TARGET_SETS
from metadial.loop import LoopResult, train_loop
from metadial.parallel import replicate

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "default.py")


def validate_config(config: ml_collections.ConfigDict) -> tuple[list[str], list[int]]:
    """Checks the config before any data is read or model trained; returns (methods, target sizes)."""
    methods = check_shared(config, list(METHODS))
    check_choices("target_set", config.target_set, TARGET_SETS)
    check_choices("related_sources", config.related_sources, RELATED_SOURCES)
    if config.related_sources == "babi+profiles" and config.target_set == "small":
        raise ConfigError(
            "config.related_sources='babi+profiles' adds the dialogs of the profiles other than the target's: set "
            "config.target_set to a profile"
        )
    check_positive(config, ["related_profile_dialogs"])
    if config.eval_every < 0 or config.patience < 0:
        raise ConfigError(
            f"config.eval_every and config.patience must be >= 0, got {config.eval_every}, {config.patience}"
        )
    if not config.train_steps:
        check_positive(config, ["max_epochs"])
    if not config.eval_every:
        check_positive(config, ["eval_epochs"])
    try:
        sizes = [int(s) for s in as_list(config.target_dialogs)]
    except ValueError:
        sizes = []
    if not sizes or any(s <= 0 for s in sizes):
        raise ConfigError(f"config.target_dialogs must be positive dialog counts, got {config.target_dialogs}")
    check_positive(config, ["eval_batch_size", "hops", "embedding_size", "memory_size", "gate_embedding_size"])
    if config.max_dialogs < 0:
        raise ConfigError(f"config.max_dialogs must be >= 0 (0 = all), got {config.max_dialogs}")
    return methods, sizes


@dataclasses.dataclass(frozen=True)
class Budget:
    """One run's step budget and evaluation interval, in steps (the config gives them in steps, or, at 0, in
    epochs of the run's target training examples: ``max_epochs``, ``eval_epochs``)."""

    train_steps: int
    eval_every: int
    steps_per_epoch: float
    patience: int

    @classmethod
    def of(cls, config: ml_collections.ConfigDict, num_target_examples: int, steps_per_call: int = 1) -> Budget:
        """The budget of ``config`` for a run on ``num_target_examples``; with ``steps_per_call > 1`` (a
        trajectory segment) both step counts are rounded up to multiples of it."""
        per_epoch = num_target_examples / config.batch_size
        train_steps = config.train_steps or math.ceil(config.max_epochs * per_epoch)
        eval_every = config.eval_every or math.ceil(config.eval_epochs * per_epoch)
        up = lambda n: -(-n // steps_per_call) * steps_per_call
        return cls(up(train_steps), up(min(eval_every, train_steps)), per_epoch, config.patience)

    def describe(self, first_phase_steps: int = 0) -> str:
        text = (
            f"at most {self.train_steps} steps ({self.train_steps / self.steps_per_epoch:.0f} epochs of the "
            f"target data), dev evaluation every {self.eval_every} steps"
        )
        if self.patience:
            text += f", early stopping after {self.patience} evaluations without improvement"
            text += f" from step {first_phase_steps}" if first_phase_steps else ""
        return text


def mean_by_kind(values: np.ndarray | list, kinds: list[str] | np.ndarray) -> dict[str, float]:
    """Mean of ``values`` over the examples of each kind of bot turn (greeting, api_call, ...), sorted by kind."""
    kinds_arr = np.asarray(kinds)
    return {k: float(np.asarray(values)[kinds_arr == k].mean()) for k in sorted(set(kinds_arr.tolist()))}


def run_name(method: str, size: int, seed: int) -> str:
    """The name of one run: its checkpoint folder, metrics tag and log prefix."""
    return f"{method}-{size}-seed{seed}"


def run_key(entry: dict) -> tuple:
    """``(method, target_dialogs, seed)``: which run a record, a weights entry or a metrics line belongs to."""
    return entry.get("method"), entry.get("target_dialogs"), entry.get("seed")


def _fit(
    program: DialogProgram,
    data: DialogData,
    pools: Pools,
    state: Any,
    key: jax.Array,
    size: int,
    seed: int,
    store: RunStore,
) -> tuple[LoopResult, Budget]:
    """``program``'s training loop from ``state`` with batch key ``key`` on ``pools`` (target training set of
    ``size`` dialogs), with dev model selection under the budget rule, resuming from the run's checkpoint if any;
    and the budget."""
    c = program.config
    budget = Budget.of(c, program.pool_size(pools, TARGET), program.steps_per_call)
    name = run_name(program.name, size, seed)
    logging.info("%s: %s", name, budget.describe(program.method.first_phase_steps(budget.train_steps, c)))
    result = train_loop(
        program.step_fn(pools, budget.train_steps, seed),
        state,
        key,
        num_steps=budget.train_steps,
        name=name,
        log_every=c.log_every or budget.eval_every,
        evaluate=lambda state: program.evaluate(state.params, data.dev)[0],
        eval_every=budget.eval_every,
        eval_name="dev_accuracy",
        evals_after=len(data.test) / len(data.dev) + len(data.oov) / len(data.dev),
        patience=c.patience,
        patience_from=program.method.first_phase_steps(budget.train_steps, c),
        checkpointer=store.checkpointer(name),
        checkpoint_every=c.checkpoint_every,
        metrics_log=store.metrics_log(
            name, {"method": program.name, "target_dialogs": size, "seed": seed}, c.tensorboard
        ),
        log_metrics=(lambda state: program.kind_means(state, pools, data)) if program.method.meta else None,
        steps_per_call=program.steps_per_call,
    )
    return result, budget


def _scores(program: DialogProgram, data: DialogData, result: LoopResult) -> dict:
    """Test, OOV and dev accuracy of a run's best-dev parameters, and when it stopped."""
    test_correct = program.correct(result.best_state.params, data.test)
    test = accuracies(test_correct, data.test)
    oov = program.evaluate(result.best_state.params, data.oov)
    return {
        "test_response_accuracy": test[0],
        "test_dialog_accuracy": test[1],
        "oov_response_accuracy": oov[0],
        "oov_dialog_accuracy": oov[1],
        "dev_response_accuracy": result.best_score,
        "best_step": result.best_step,
        "stopped_step": result.stopped_step,
        "test_accuracy_by_kind": mean_by_kind(test_correct, data.test.kinds),
    }


def run_one(
    program: DialogProgram, data: DialogData, seed: int, size: int, store: RunStore
) -> tuple[dict, np.ndarray | None]:
    """Trains one (method, size, seed) with dev model selection (resuming from its checkpoint if any);
    returns its record and the related examples' weights. ``data`` is on the program's mesh. With
    ``config.meta_holdout_refit``, a final fit follows (``run_name(...)`` of ``<method>-refit``): a fresh model
    (same initial parameters) on all the target data and the related data, weighted by the learned weighting
    held fixed; the record then gives the final fit's scores and, under ``before_refit``, the meta run's."""
    c = program.config
    pools = data.train_pools(replicate(data.target_train(size, seed), program.mesh))
    k_init, k_train, k_eval = jax.random.split(jax.random.key(seed), 3)
    start = time.time()
    state = program.init(k_init, pools)
    result, budget = _fit(program, data, pools, state, k_train, size, seed, store)
    carried = result.carried_seconds
    logging.info("%s: test and OOV evaluation of the step-%d parameters (best dev)", program.name, result.best_step)
    scores = _scores(program, data, result)
    weights = program.related_weights(result.best_state, k_eval, pools, data.num_related)
    before_refit = None
    if program.refits:
        refit = program.refit_program()
        state = refit.init(k_init, pools).replace(meta_params=result.best_state.meta_params)
        result, budget = _fit(refit, data, pools, state, k_train, size, seed, store)
        carried += result.carried_seconds
        before_refit, scores = scores, _scores(refit, data, result)
    record = {
        "method": program.name,
        "seed": seed,
        "target_dialogs": size,
        "target_set": c.target_set,
        "related_sources": c.related_sources,
        **program.meta_fields(),
        **scores,
        "train_steps": budget.train_steps,
        "eval_every": budget.eval_every,
        "resumed_from_step": result.resumed_from,
    }
    program.add_optional_fields(record, before_refit)
    # the wall-clock of the whole run: a resumed run adds what it had spent up to its checkpoint
    record["wall_seconds"] = round(time.time() - start + carried, 1)
    return record, weights


SUMMARY_COLUMNS = [
    ("test_response_accuracy", "test per-response (%)", 100.0, 1),
    ("test_dialog_accuracy", "test per-dialog (%)", 100.0, 1),
    ("oov_response_accuracy", "OOV per-response (%)", 100.0, 1),
    ("oov_dialog_accuracy", "OOV per-dialog (%)", 100.0, 1),
    ("dev_response_accuracy", "dev per-response (%)", 100.0, 1),
    ("wall_seconds", "seconds per run", 1.0, 0),
]


def kind_table(weight_runs: list[dict], kinds: list[str]) -> str:
    """Mean weight of each kind of related bot turn, mean ± std over seeds, per (method, target_dialogs)."""
    kind_names = sorted(set(kinds))
    rows = [
        dict(method=run["method"], target_dialogs=run["target_dialogs"], **mean_by_kind(run["weights"], kinds))
        for run in weight_runs
    ]
    return summary_table(rows, ["method", "target_dialogs"], [(k, k, 1.0, 2) for k in kind_names])


def source_tables(weight_runs: list[dict], kinds: list[str], sources: list[str]) -> str:
    """With related examples from more than one source: the mean weight per source, and per source and kind of
    bot turn, mean ± std over seeds ("" with one source)."""
    names = sorted(set(sources))
    if len(names) < 2:
        return ""
    source_arr, kind_arr = np.asarray(sources), np.asarray(kinds)
    by_source = [
        dict(method=run["method"], target_dialogs=run["target_dialogs"], **mean_by_kind(run["weights"], sources))
        for run in weight_runs
    ]
    text = "\nMean learned weight of the related examples by source:\n\n"
    text += summary_table(by_source, ["method", "target_dialogs"], [(s, s, 1.0, 2) for s in names])
    by_both = [
        dict(
            method=run["method"],
            target_dialogs=run["target_dialogs"],
            source=name,
            **mean_by_kind(np.asarray(run["weights"])[source_arr == name], kind_arr[source_arr == name]),
        )
        for run in weight_runs
        for name in names
    ]
    text += "\nMean learned weight of the related examples by source and kind of bot turn:\n\n"
    text += summary_table(by_both, ["method", "target_dialogs", "source"], [(k, k, 1.0, 2) for k in sorted(set(kinds))])
    return text


def kind_accuracy_table(records: list[dict], group_keys: list[str]) -> str:
    """Per-kind test accuracy (%), mean ± std per group, over the records that have it ("" if none does)."""
    rows = [
        dict(r, **{f"kind_{k}": v for k, v in r["test_accuracy_by_kind"].items()})
        for r in records
        if "test_accuracy_by_kind" in r
    ]
    if not rows:
        return ""
    names = sorted({k for r in records for k in r.get("test_accuracy_by_kind", {})})
    return summary_table(rows, group_keys, [(f"kind_{k}", k, 100.0, 1) for k in names])


STOP_COLUMNS = [("best_step", "best step", 1.0, 0), ("stopped_step", "stopped at step", 1.0, 0)]


def related_text(config: ml_collections.ConfigDict) -> str:
    """The related data in words, for the summary's header."""
    if config.related_sources == "babi+profiles":
        return f"bAbI dialog task 5 and {config.related_profile_dialogs} dialogs of the other five profiles"
    return "bAbI dialog task 5"


def budget_text(config: ml_collections.ConfigDict) -> str:
    """The budget rule in words, for the summary's header."""
    steps = f"{config.train_steps} steps" if config.train_steps else f"at most {config.max_epochs} epochs"
    every = f"{config.eval_every} steps" if config.eval_every else f"{config.eval_epochs} epochs"
    text = f"{steps} of batch {config.batch_size}, model selected on dev every {every}"
    return text + (
        f", early stopping after {config.patience} evaluations without improvement" if config.patience else ""
    )


def summarize(
    records: list[dict],
    weight_runs: list[dict],
    kinds: list[str],
    config: ml_collections.ConfigDict,
    sources: list[str] | None = None,
) -> str:
    """The summary tables of a dialog workdir: accuracies (and, with early stopping, best and stopping
    steps), the related examples' mean weight per kind of turn (and per source, with several), and the per-kind
    test accuracy."""
    target = "small set" if config.target_set == "small" else f"profile {config.target_set}"
    text = (
        f"Personalized bAbI dialog task 5 (regenerated, {target}) with {related_text(config)} as related data; "
        f"{budget_text(config)}; mean ± std over seeds.\n\n"
    )
    stops = STOP_COLUMNS if any("stopped_step" in r for r in records) else []
    text += summary_table(records, ["method", "target_dialogs"], SUMMARY_COLUMNS + stops)
    if weight_runs:
        text += (
            "\nMean learned weight of the related examples by kind of bot turn (l2rw: recomputed at the "
            "selected parameters, scaled so that a batch averages 1):\n\n"
        )
        text += kind_table(weight_runs, kinds)
        text += source_tables(weight_runs, kinds, sources or [])
    by_kind = kind_accuracy_table(records, ["method", "target_dialogs"])
    if by_kind:
        text += (
            "\nTest per-response accuracy (%) by kind of target bot turn (the kinds of the weight table, "
            "matched to their personalized rewordings):\n\n"
        ) + by_kind
    return text


def run(config: ml_collections.ConfigDict, workdir: str | None, data: DialogData | None = None) -> list[dict]:
    """Runs every method × target size × seed; writes outputs after each run if ``workdir`` is set.

    Re-running with the same workdir skips finished runs and resumes the unfinished one. ``data`` is
    ``load_data(config)``, if the caller already has it."""
    methods, sizes = validate_config(config)
    store = RunStore(workdir, config)
    todo = [
        (method, size, seed)
        for method in methods
        for size in sizes
        for seed in seeds(config)
        if not store.done(method=method, target_dialogs=size, seed=seed)
    ]
    total = len(methods) * len(sizes) * config.num_seeds
    logging.info(
        "dialog: %d runs to make (%d of the config's %d already finished in %s)",
        len(todo),
        total - len(todo),
        total,
        workdir,
    )
    data = data or load_data(config)
    num_train = len(data.corpus.dialogs["target_trn"])
    for size in sizes:
        if size > num_train:
            raise ConfigError(f"config.target_dialogs={size} exceeds the {num_train} training dialogs available")
    records = store.records
    weight_runs = store.finished_weight_runs(("method", "target_dialogs", "seed"))
    examples = data.related_examples()
    written: dict[str, None] = {}
    program: DialogProgram | None = None
    placed = None
    for i, (method, size, seed) in enumerate(todo, 1):
        if program is None or program.name != method:
            program = DialogProgram(method, config, data)  # built once per method, reused for its runs
            placed = placed or data.on_mesh(program.mesh)
        assert placed is not None
        logging.info("run %d/%d: %s", i, len(todo), run_name(method, size, seed))
        record, weights = run_one(program, placed, seed, size, store)
        records.append(record)
        logging.info(
            "%s: test per-response accuracy %.4f, best dev %.4f at step %d (%.0fs)",
            run_name(method, size, seed),
            record["test_response_accuracy"],
            record["dev_response_accuracy"],
            record["best_step"],
            record["wall_seconds"],
        )
        if weights is not None:
            weight_runs.append(
                {
                    "method": method,
                    "target_dialogs": size,
                    "seed": seed,
                    "weights": [round(float(w), 5) for w in weights],
                }
            )
        summary = summarize(records, weight_runs, data.related_kinds, config, data.related_sources)
        written.update(
            dict.fromkeys(
                store.save(summary, {"examples": examples, "runs": weight_runs} if weights is not None else None)
            )
        )
    if records:
        summary = summarize(records, weight_runs, data.related_kinds, config, data.related_sources)
        if not todo:  # nothing new: rewrite the summary from results.json
            written.update(dict.fromkeys(store.save(summary)))
        report(list(written), summary)
    return records
