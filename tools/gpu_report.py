r"""The dialog experiment on a GPU against the same on CPU: step times from two bench files and converged runs.

    python -m tools.gpu_report --gpu=results/dialog_gpu \
        [--cpu_bench=results/bench/dialog_bench_female_elderly.json] \
        [--cpu_runs=results/dialog_sweep/profiles/female_elderly/results.json]

``--gpu`` is the folder of ``tools/gpu_run.sh``'s outputs: ``dialog_bench_female_elderly.json`` (the bench on the
GPU) and one launcher workdir per converged run (``meta_net/``, ``union/``: their ``results.json``). Writes
``GPU/summary.md``: each method's (and estimator's) median step time on both, the GPU's speed-up and each step as
a multiple of ``union``'s on both; one dev evaluation; then each converged run on the GPU beside the CPU run of the
same config (test per-response accuracy, best and last step, wall time).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import app, flags

from metadial.io import atomic_write_text, read_json

FLAGS = flags.FLAGS
BENCH_FILE = "dialog_bench_female_elderly.json"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table of string cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def step_rows(cpu: dict, gpu: dict) -> list[list[str]]:
    """One row per method, then per estimator of ``meta_net``, of the GPU bench (with the CPU bench's time where it
    has the same step; "—" where it has not)."""
    cpu_union, gpu_union = cpu["methods"]["union"]["step_ms"], gpu["methods"]["union"]["step_ms"]
    rows = []
    for part, label in (("methods", "{}"), ("estimators", "meta_net ({})")):
        for name, timing in gpu.get(part, {}).items():
            gpu_ms = timing["step_ms"]
            cpu_ms = cpu.get(part, {}).get(name, {}).get("step_ms")
            if cpu_ms is None:
                cpu_cells = ["—"] * 3
            else:
                cpu_cells = [f"{cpu_ms:.2f}", f"{cpu_ms / gpu_ms:.1f}", f"{cpu_ms / cpu_union:.2f}"]
            ms, speed_up, cpu_ratio = cpu_cells
            rows.append([label.format(name), ms, f"{gpu_ms:.2f}", speed_up, cpu_ratio, f"{gpu_ms / gpu_union:.2f}"])
    return rows


def run_rows(cpu_records: list[dict], gpu_records: list[dict], device: str) -> list[list[str]]:
    """Each GPU run beside the CPU run of the same method (and estimator)."""
    key = lambda r: (r["method"], r.get("estimator"))
    by_key = {key(r): r for r in cpu_records}
    rows = []
    for gpu_run in gpu_records:
        cpu_run = by_key.get(key(gpu_run))
        for where, run in (("2 CPU cores", cpu_run), (device, gpu_run)):
            if run is None:
                continue
            rows.append(
                [
                    run["method"],
                    where,
                    f"{100 * run['test_response_accuracy']:.2f}",
                    str(run["best_step"]),
                    str(run["stopped_step"]),
                    f"{run['wall_seconds']:.0f}",
                ]
            )
        if cpu_run is not None:
            rows[-1][-1] += f" ({cpu_run['wall_seconds'] / gpu_run['wall_seconds']:.1f}× faster)"
    return rows


def report(gpu_dir: str, cpu_bench_path: str, cpu_runs_path: str) -> str:
    """The markdown of ``summary.md``: the step-time table, the dev evaluation, and the converged runs of
    ``gpu_dir`` beside the CPU records in ``cpu_runs_path``."""
    gpu = read_json(os.path.join(gpu_dir, BENCH_FILE))
    cpu = read_json(cpu_bench_path)
    text = (
        f"The dialog experiment on {gpu['device']} (jax {gpu['jax']}) against {cpu['cpu_count']} CPU cores "
        f"(jax {cpu['jax']}): `{gpu['target_set']}`, 100 target dialogs, bAbI task 5 related, batch 32.\n\n"
        "Median step time (ms), the GPU's speed-up, and each step as a multiple of `union`'s:\n\n"
    )
    header = ["step", "CPU ms", "GPU ms", "GPU speed-up", "× union (CPU)", "× union (GPU)"]
    text += markdown_table(header, step_rows(cpu, gpu)) + "\n\n"
    text += (
        f"One dev evaluation ({cpu['target_candidates']} candidates): {cpu['dev_eval_seconds']:.2f} s on CPU, "
        f"{gpu['dev_eval_seconds']:.3f} s on the GPU.\n"
    )
    gpu_records = []
    for name in sorted(os.listdir(gpu_dir)):
        path = os.path.join(gpu_dir, name, "results.json")
        if os.path.exists(path):
            gpu_records += read_json(path)
    if gpu_records:
        header = ["method", "where", "test per-response (%)", "best step", "stopped at step", "seconds"]
        text += (
            "\nConverged runs (seed 0, the default budget rule: at most 1000 epochs, dev every 10 epochs, early "
            "stopping after 20 evaluations without improvement):\n\n"
            + markdown_table(header, run_rows(read_json(cpu_runs_path), gpu_records, gpu["device"]))
            + "\n"
        )
    return text


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    text = report(FLAGS.gpu, FLAGS.cpu_bench, FLAGS.cpu_runs)
    atomic_write_text(os.path.join(FLAGS.gpu, "summary.md"), text)
    print(text)


if __name__ == "__main__":
    flags.DEFINE_string("gpu", None, "Folder of tools/gpu_run.sh's outputs.", required=True)
    flags.DEFINE_string("cpu_bench", f"results/bench/{BENCH_FILE}", "The bench on CPU, same profile.")
    flags.DEFINE_string(
        "cpu_runs", "results/dialog_sweep/profiles/female_elderly/results.json", "The CPU runs of the same config."
    )
    app.run(main)
