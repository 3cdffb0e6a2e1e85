r"""Where a dialog training step spends its time: the XLA operations of one method's compiled step, timed with the
JAX profiler and grouped by the model code they come from.

    python -m tools.profile_step --method=target_only [--config=experiments/dialog/configs/default.py] \
        [--config.target_set=small] [--steps=20] [--top=15] [--workdir=DIR]

Compiles the method's training step (as the launcher builds it, at the config's first ``target_dialogs``), runs a
few warm-up steps, then traces ``--steps`` steps. Each traced XLA operation is matched to the compiled module's
instruction of that name, whose metadata names the source (``MemN2N/MemN2N.scores/dot_general``, with
``backward`` for the gradient's part; operations outside the model's modules are the loss's or the optimizer's).
Prints the ``--top`` groups by time per step, and the share of the step spent on the candidate set: every
operation whose output has a dimension of one entry per candidate, or that embeds the candidates. With
``--workdir``, writes ``DIR/profile_<method>_<target_set>.json``. Times under the profiler are somewhat above the
benchmark's; read the shares, and run it on an otherwise idle machine.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from dataclasses import dataclass

import jax
from absl import app, flags
from ml_collections import config_flags

from experiments.dialog.data import load_data
from experiments.dialog.program import DialogProgram
from experiments.dialog.train import DEFAULT_CONFIG, validate_config
from metadial.io import atomic_write_json

FLAGS = flags.FLAGS

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = ([^ ]+) .*?metadata=\{op_name=\"([^\"]+)\"")
_WRAPPERS = re.compile(r"(?:transpose|jvp|jit|pjit)\(|\)")


@dataclass(frozen=True)
class Instruction:
    """An instruction of a compiled HLO module: where it comes from and the dimensions of its (first) output."""

    source: str
    dims: tuple[int, ...]


def hlo_instructions(hlo_text: str) -> dict[str, Instruction]:
    """The instructions of an optimised HLO module's text that carry source metadata, by name. ``source`` is
    the metadata's ``op_name`` without the jit and differentiation wrappers, prefixed ``backward:`` where the
    operation belongs to a gradient (a transpose)."""
    out = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, shape, op_name = match.groups()
        parts = op_name.split("/")[1:] if op_name.startswith("jit(") else op_name.split("/")
        source = "/".join(p for p in (_WRAPPERS.sub("", p) for p in parts) if p)
        if "/" not in source:  # outside the model's modules: the loss (softmax) or the optimizer's update
            source = f"loss or optimizer: {source}"
        if "transpose(" in op_name:
            source = "backward: " + source
        dims = re.search(r"\[([\d,]*)\]", shape)
        out[name] = Instruction(source, tuple(int(d) for d in dims.group(1).split(",") if d) if dims else ())
    return out


def op_microseconds(trace_events: list[dict]) -> collections.Counter:
    """Total duration (µs) of each complete ("X") trace event, by name."""
    total: collections.Counter = collections.Counter()
    for event in trace_events:
        if event.get("ph") == "X" and "dur" in event:
            total[event["name"]] += event["dur"]
    return total


def profile_table(
    durations: collections.Counter, instructions: dict[str, Instruction], steps: int, num_candidates: int
) -> dict:
    """Milliseconds per step of every source group (instructions of the same ``source``), sorted by time; the
    total over the module's instructions; and the part spent on the candidate set (an output with a dimension
    of ``num_candidates``, or a source in ``embed_candidates``)."""
    groups: collections.defaultdict[str, float] = collections.defaultdict(float)
    candidates = 0.0
    for name, micros in durations.items():
        instruction = instructions.get(name)
        if instruction is None:  # runtime events (dispatch, waits): not an operation of the module
            continue
        ms = micros / 1e3 / steps
        groups[instruction.source] += ms
        if num_candidates in instruction.dims or "embed_candidates" in instruction.source:
            candidates += ms
    total = sum(groups.values())
    return {
        "ms_per_step": total,
        "candidate_ms_per_step": candidates,
        "candidate_share": candidates / total if total else 0.0,
        "groups": [
            {"source": s, "ms_per_step": ms, "share": ms / total}
            for s, ms in sorted(groups.items(), key=lambda g: -g[1])
        ],
    }


def profile(config, method: str, steps: int) -> dict:
    """Traces ``steps`` training steps of ``method`` and groups their operations (``profile_table``)."""
    _, sizes = validate_config(config)
    data = load_data(config)
    pools = data.train_pools(data.target_train(min(sizes), 0))
    program = DialogProgram(method, config, data)
    state = program.init(jax.random.key(0), pools)
    keys = jax.random.split(jax.random.key(1), steps + 5)
    for key in keys[:5]:  # compiles, then warms up
        state = program.train_step(state, key, pools)[0]
    jax.block_until_ready(state)
    hlo = program.train_step.lower(state, keys[0], pools).compile().as_text() or ""
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for key in keys[5:]:
                state = program.train_step(state, key, pools)[0]
            jax.block_until_ready(state)
        (trace_file,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(trace_file) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    num_candidates = int(data.corpus.target_candidates.shape[0])
    table = profile_table(op_microseconds(events), hlo_instructions(hlo), steps, num_candidates)
    return {"method": method, "target_set": config.target_set, "target_candidates": num_candidates, **table}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    result = profile(FLAGS.config, FLAGS.method, FLAGS.steps)
    if FLAGS.workdir:
        os.makedirs(FLAGS.workdir, exist_ok=True)
        name = f"profile_{result['method']}_{result['target_set']}.json"
        atomic_write_json(os.path.join(FLAGS.workdir, name), result)
    print(
        f"{result['method']} on {result['target_set']} ({result['target_candidates']} candidates): "
        f"{result['ms_per_step']:.2f} ms per step in XLA operations, {result['candidate_ms_per_step']:.2f} ms "
        f"({100 * result['candidate_share']:.0f} %) on the candidate set"
    )
    for group in result["groups"][: FLAGS.top]:
        print(f"{group['ms_per_step']:8.3f} ms {100 * group['share']:5.1f} %  {group['source']}")


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "The dialog configuration.")
    flags.DEFINE_string("method", "target_only", "The method whose training step is profiled.")
    flags.DEFINE_integer("steps", 20, "Traced steps (after 5 warm-up steps).")
    flags.DEFINE_integer("top", 15, "Source groups to print.")
    flags.DEFINE_string("workdir", None, "Where to write profile_<method>_<target_set>.json (optional).")
    app.run(main)
