"""The maintenance tools (tools/): merge, publish, plots, rescore."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from experiments.ideal.configs.default import get_config
from tests.conftest import smoke_config

ROOT = Path(__file__).resolve().parents[1]


def test_merge_of_split_workdirs_reproduces_the_single_run_table(tmp_path):
    from tools.merge import merge

    records = json.loads((ROOT / "results/ideal/results.json").read_text())
    for name, part in [("a", records[:10]), ("b", records[10:])]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(part))
    merge("ideal", get_config(), [str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "out"))
    assert (tmp_path / "out/summary.md").read_text() == (ROOT / "results/ideal/summary.md").read_text()
    (tmp_path / "a/results.json").write_text("[{")
    with pytest.raises(ValueError, match=r"a/results.json:1: not valid JSON"):
        merge("ideal", get_config(), [str(tmp_path / "a")], str(tmp_path / "out"))


def test_publish_replaces_only_its_block(tmp_path):
    from tools.publish import publish, published_block

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:a:start -->\nold\n<!-- results:a:end -->\nrest\n")
    summary = tmp_path / "summary.md"
    summary.write_text("Header.\n\n| m | x |\n|---|---|\n| a | 1 |\n\nMore.\n\n| k | y |\n|---|---|\n")
    publish(str(readme), str(summary), "a")
    assert published_block(readme.read_text(), "a") == summary.read_text().strip("\n")
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("rest\n")
    publish(str(readme), str(summary), "a", first_table=True)
    assert published_block(readme.read_text(), "a") == "Header.\n\n| m | x |\n|---|---|\n| a | 1 |"
    with pytest.raises(ValueError, match="no '<!-- results:b:start -->'"):
        publish(str(readme), str(summary), "b")


def test_plots_from_a_workdir(tmp_path):
    from tools.plots import make_plots

    records = [
        {"method": m, "seed": s, "target_dialogs": n, "test_response_accuracy": 0.5 + 0.01 * s}
        for m in ("union", "meta_net")
        for n in (50, 100)
        for s in range(3)
    ]
    (tmp_path / "results.json").write_text(json.dumps(records))
    examples = [{"example_id": i, "kind": k} for i, k in enumerate(["greeting", "api_call", "options"])]
    runs = [{"method": "meta_net", "target_dialogs": 50, "seed": 0, "weights": [0.2, 0.9, 0.5]}]
    (tmp_path / "related_weights.json").write_text(json.dumps({"examples": examples, "runs": runs}))
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(
            json.dumps(
                {"method": "meta_net", "target_dialogs": 50, "seed": 0, "step": s, "weight_greeting": 0.5 - 0.1 * s}
            )
            for s in (1, 2, 3)
        )
        + "\n"
    )
    made = make_plots(str(tmp_path))
    assert sorted(p.rsplit("/", 1)[1] for p in made) == [
        "accuracy_vs_target_dialogs.png",
        "weight_histograms.png",
        "weights_over_training.png",
    ]
    for p in made:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # a second related source adds the per-source figure
    for e, source in zip(examples, ["babi", "babi", "profiles"]):
        e["source"] = source
    (tmp_path / "related_weights.json").write_text(json.dumps({"examples": examples, "runs": runs}))
    assert "weights_by_source.png" in [p.rsplit("/", 1)[1] for p in make_plots(str(tmp_path))]


def test_rescore_rebuilds_the_per_kind_accuracy_from_the_checkpoints(smoke_workdir, tmp_path):
    from tools.rescore import rescore

    workdir = tmp_path / "w"
    shutil.copytree(smoke_workdir, workdir)
    records = json.loads((workdir / "results.json").read_text())
    stripped = [{k: v for k, v in r.items() if k != "test_accuracy_by_kind"} for r in records]
    (workdir / "results.json").write_text(json.dumps(stripped))
    rescored = rescore(smoke_config(), str(workdir))
    assert [r["test_accuracy_by_kind"] for r in rescored] == [r["test_accuracy_by_kind"] for r in records]
    assert json.loads((workdir / "results.json").read_text()) == rescored


def test_continue_runs_under_a_larger_patience_matches_a_fresh_run(tmp_path):
    from experiments.dialog import train
    from tests.conftest import smoke_config
    from tools.continue_runs import continue_workdir

    config = lambda patience: smoke_config(methods=("union",), train_steps=40, eval_every=2, patience=patience)
    [impatient] = train.run(config(1), str(tmp_path / "old"))
    assert impatient["stopped_step"] < 40  # the premise: patience 1 stops the run early
    prepared = continue_workdir(str(tmp_path / "old"), str(tmp_path / "new"), patience=4)
    assert prepared == ["union-3-seed0"]
    [continued] = train.run(config(4), str(tmp_path / "new"))
    [fresh] = train.run(config(4), str(tmp_path / "fresh"))
    how_made = ("wall_seconds", "resumed_from_step")
    assert {k: v for k, v in continued.items() if k not in how_made} == {
        k: v for k, v in fresh.items() if k not in how_made
    }
    assert (
        continued["resumed_from_step"] == impatient["stopped_step"]
        and continued["stopped_step"] > continued["resumed_from_step"]
    )
    assert continued["wall_seconds"] >= impatient["wall_seconds"]  # the whole run's time, both parts
    # the continued workdir's metrics are the fresh run's, line for line
    steps = lambda d: [e["step"] for e in map(json.loads, (tmp_path / d / "metrics.jsonl").open())]
    assert steps("new") == steps("fresh")
    with pytest.raises(ValueError, match="already holds runs"):
        continue_workdir(str(tmp_path / "old"), str(tmp_path / "new"), patience=4)
    with pytest.raises(ValueError, match="must be larger"):
        continue_workdir(str(tmp_path / "old"), str(tmp_path / "other"), patience=1)


def test_upgrade_layout_moves_old_meta_state_into_the_weighting_state():
    from tools.continue_runs import upgrade_layout

    old_state = {"params": 1, "opt_state": [2], "meta_params": 3, "meta_opt_state": [4, None], "step": 5}
    new_state = {"params": 1, "opt_state": [2], "step": 5}
    new_state["weighting"] = {"meta_params": 3, "meta_opt_state": [4, None], "estimator_state": ()}
    old = {"state": old_state, "best": {"state": old_state, "score": 0.5, "step": 4}}
    new = {"state": new_state, "best": {"state": new_state, "score": 0.5, "step": 4}}
    assert upgrade_layout(old) == new
    assert upgrade_layout(new) == new  # today's layout, and states without meta-parameters, are kept


def test_paired_differences_figure_of_a_sweep(tmp_path):
    from tools.plots import make_plots, sweep_records

    for i, profile in enumerate(["p1", "p2"]):
        folder = tmp_path / "profiles" / profile
        folder.mkdir(parents=True)
        records = [
            {"method": m, "target_set": profile, "test_response_accuracy": a}
            for m, a in [("union", 0.7), ("meta_net", 0.7 + 0.01 * i), ("target_only", 0.6)]
        ]
        (folder / "results.json").write_text(json.dumps(records))
    assert len(sweep_records(str(tmp_path))) == 6
    assert [p.rsplit("/", 1)[1] for p in make_plots(str(tmp_path))] == ["paired_differences.png"]
    # a small/ part: paired by seed, with per-kind accuracy differences and relative weights
    folder = tmp_path / "small_1000" / "small"
    folder.mkdir(parents=True)
    by_kind = {"options": 0.3, "api_call": 0.9}
    records = [
        {"method": m, "seed": s, "test_response_accuracy": a, "test_accuracy_by_kind": by_kind}
        for s in range(2)
        for m, a in [("union", 0.8), ("meta_net", 0.81), ("target_only", 0.82)]
    ]
    (folder / "results.json").write_text(json.dumps(records))
    examples = [{"kind": k} for k in ["options", "api_call"]]
    runs = [{"method": "meta_net", "seed": s, "weights": [0.1, 0.3]} for s in range(2)]
    (folder / "related_weights.json").write_text(json.dumps({"examples": examples, "runs": runs}))
    assert [p.rsplit("/", 1)[1] for p in make_plots(str(tmp_path))] == [
        "paired_differences.png",
        "paired_differences_small_1000.png",
        "by_kind_small_1000.png",
    ]


def test_differences_to_union_leave_out_what_is_far_below_and_weights_are_relative_to_the_mean():
    from tools.plots import _differences_to_union, left_out, relative_kind_weights

    records = [
        {"method": m, "seed": s, "test_response_accuracy": a + 0.01 * s}
        for s in range(2)
        for m, a in [("union", 0.70), ("l2rw", 0.69), ("target_only", 0.62)]
    ]
    differences = _differences_to_union(records, "seed")
    assert differences["l2rw"] == pytest.approx({0: -1.0, 1: -1.0})
    assert left_out(differences) == ["target_only"]  # 8 points below; l2rw, 1 below, stays
    runs = [{"method": "l2rw", "weights": [0.0, 0.02, 0.04, 0.02]}, {"method": "meta_net", "weights": [0.5] * 4}]
    relative = relative_kind_weights(runs, ["greeting", "options", "options", "api_call"])
    assert relative["l2rw"] == pytest.approx({"api_call": 1.0, "greeting": 0.0, "options": 1.5})
    assert relative["meta_net"] == pytest.approx({"api_call": 1.0, "greeting": 1.0, "options": 1.0})


def test_profile_table_groups_traced_operations_by_source_and_counts_the_candidate_set():
    from tools.profile_step import hlo_instructions, op_microseconds, profile_table

    hlo = "\n".join(
        [
            "ENTRY %main {",
            '  %ynn_fusion.12 = f32[32,500]{1,0} fusion(%a, %b), kind=kCustom, metadata={op_name="jit(_train_step)/'
            'jvp(MemN2N)/MemN2N.scores/dot_general" stack_frame_id=1}',
            '  %ynn_fusion.9 = f32[32,20]{1,0} fusion(%c, %d), kind=kCustom, metadata={op_name="jit(_train_step)/'
            'transpose(jvp(MemN2N))/MemN2N.scores/dot_general" stack_frame_id=2}',
            '  %wrapped_scatter.2 = f32[700,20]{1,0} fusion(%e), kind=kLoop, metadata={op_name="jit(_train_step)/'
            'jvp(MemN2N)/MemN2N.embed_candidates/scatter-add" stack_frame_id=3}',
            '  ROOT %multiply_add_fusion = f32[900,20]{1,0} fusion(%f), kind=kLoop, metadata={op_name="jit(_train_step)'
            '/add" stack_frame_id=4}',
            "  %copy.1 = f32[20]{0} copy(%g)",
            "}",
        ]
    )
    instructions = hlo_instructions(hlo)
    assert instructions["ynn_fusion.12"].source == "MemN2N/MemN2N.scores/dot_general"
    assert instructions["ynn_fusion.12"].dims == (32, 500)
    assert instructions["ynn_fusion.9"].source == "backward: MemN2N/MemN2N.scores/dot_general"
    assert instructions["multiply_add_fusion"].source == "loss or optimizer: add"
    assert "copy.1" not in instructions  # no source metadata
    steps = 2
    events = [
        {"ph": "X", "name": "ynn_fusion.12", "dur": 3000},  # two steps of 3 ms
        {"ph": "X", "name": "ynn_fusion.12", "dur": 3000},
        {"ph": "X", "name": "ynn_fusion.9", "dur": 2000},
        {"ph": "X", "name": "wrapped_scatter.2", "dur": 1000},
        {"ph": "X", "name": "multiply_add_fusion", "dur": 4000},
        {"ph": "X", "name": "ThunkExecutor::Execute", "dur": 99000},  # runtime, not an operation
        {"ph": "i", "name": "ynn_fusion.9"},  # an instant event has no duration
    ]
    table = profile_table(op_microseconds(events), instructions, steps, num_candidates=500)
    assert table["ms_per_step"] == pytest.approx(6.5)
    # the logits (a dimension of 500 candidates) and the candidates' embedding; not the u gradient (32, 20)
    assert table["candidate_ms_per_step"] == pytest.approx(3.5)
    assert table["candidate_share"] == pytest.approx(3.5 / 6.5)
    assert [g["source"] for g in table["groups"]] == [
        "MemN2N/MemN2N.scores/dot_general",
        "loss or optimizer: add",
        "backward: MemN2N/MemN2N.scores/dot_general",
        "MemN2N/MemN2N.embed_candidates/scatter-add",
    ]
    assert sum(g["share"] for g in table["groups"]) == pytest.approx(1.0)


def test_headroom_splits_the_lost_accuracy_by_kind_and_adds_up(tmp_path):
    from metadial.data.dialog_tasks import PROFILES
    from tools.headroom import headroom_rows, headroom_table, lost_points

    counts = {"api_call": 10, "options": 30, "greeting": 60}
    accuracy = {"api_call": 0.5, "options": 0.1, "greeting": 1.0, "book": 0.9}  # book: no test turn, no loss
    lost = lost_points(accuracy, counts)
    assert lost == pytest.approx({"api_call": 5.0, "options": 27.0, "greeting": 0.0})
    overall = sum(counts[k] * accuracy[k] for k in counts) / sum(counts.values())
    assert sum(lost.values()) == pytest.approx(100 * (1 - overall))  # 100 - per-response accuracy
    with pytest.raises(ValueError, match=r"no accuracy for the kinds \['options'\]"):
        lost_points({"api_call": 1.0, "greeting": 1.0}, counts)

    folder = tmp_path / "profiles" / PROFILES[0]
    folder.mkdir(parents=True)
    record = {"method": "union", "seed": 0, "test_response_accuracy": overall, "test_accuracy_by_kind": accuracy}
    (folder / "results.json").write_text(json.dumps([record, dict(record, method="l2rw")]))
    table = headroom_table(headroom_rows(str(tmp_path), "profiles", ["union"]), {PROFILES[0]: counts})
    assert f"| union | {PROFILES[0]} | 68.0 | 5.00 | 0.00 | 27.00 | 32.00 |" in table
    assert "| union | mean | 68.0 | 5.00 | 0.00 | 27.00 | 32.00 |" in table
    small = tmp_path / "small_100" / "small"
    small.mkdir(parents=True)
    perfect = dict(record, seed=1, test_response_accuracy=1.0, test_accuracy_by_kind=dict.fromkeys(counts, 1.0))
    (small / "results.json").write_text(json.dumps([record, perfect]))
    table_small = headroom_table(headroom_rows(str(tmp_path), "small_100", ["union"]), {"small": counts})
    assert "| union | small, seed 1 | 100.0 | 0.00 | 0.00 | 0.00 | 0.00 |" in table_small
    assert "| union | mean | 84.0 | 2.50 | 0.00 | 13.50 | 16.00 |" in table_small  # the mean of the two seeds
    assert "l2rw" not in table


def test_pack_runs_carries_only_the_unfinished_runs_latest_checkpoint(tmp_path, monkeypatch):
    import numpy as np

    from metadial.checkpoint import Checkpointer
    from tools.pack_runs import pack, unpack

    monkeypatch.chdir(tmp_path)
    workdir = Path("results/sweep/small")
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "results.json").write_text(json.dumps([{"method": "meta_net", "target_dialogs": 100, "seed": 0}]))
    ideal = Path("results/ideal")  # a finished ideal run's final fit is not carried either
    (ideal / "checkpoints").mkdir(parents=True)
    (ideal / "results.json").write_text(json.dumps([{"method": "meta_net", "seed": 0}]))
    Checkpointer(str(ideal / "checkpoints/meta_net-refit-seed0")).save(5, {"w": np.zeros(2, np.float32)})
    for folder in (workdir, ideal):
        (folder / "config.json").write_text("{}")
    trees = {}
    for run in ["meta_net-100-seed0", "meta_net-refit-100-seed0", "union-100-seed1"]:  # the first two finished
        checkpointer = Checkpointer(str(workdir / "checkpoints" / run))
        for step in (10, 20):
            trees[run, step] = {"w": np.arange(3, dtype=np.float32) + step, "step": np.asarray(step)}
            checkpointer.save(step, trees[run, step], info={"wall_seconds": 1.5 * step})
        checkpointer.close()
    (workdir / "checkpoints/union-100-seed1/30.orbax-checkpoint-tmp-0").mkdir()  # an interrupted save
    unfinished = workdir / "checkpoints/union-100-seed1"
    assert pack("runs.tar", "results") == [str(unfinished / "20"), str(unfinished / "info.json")]

    (tmp_path / "elsewhere").mkdir()  # another machine's checkout
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert unpack(str(tmp_path / "runs.tar")) == [str(unfinished / "20")]
    restored = Checkpointer(str(unfinished))
    assert restored.latest_step() == 20 and restored.info(20) == {"wall_seconds": 30.0}
    got = restored.restore(20, trees["union-100-seed1", 20])
    np.testing.assert_array_equal(got["w"], trees["union-100-seed1", 20]["w"])
    assert not (workdir / "checkpoints/meta_net-100-seed0").exists()


def test_gpu_report_pairs_each_gpu_run_with_the_cpu_run_of_the_same_method(tmp_path):
    from tools.gpu_report import BENCH_FILE, report

    def bench(device, union_ms, meta_ms, estimators):
        return {
            "device": device,
            "jax": "0",
            "cpu_count": 2,
            "target_set": "female_elderly",
            "target_candidates": 7,
            "dev_eval_seconds": 1.0,
            "methods": {"union": {"step_ms": union_ms}, "meta_net": {"step_ms": meta_ms}},
            "estimators": {name: {"step_ms": meta_ms} for name in estimators},
        }

    def record(method, accuracy, seconds):
        return {"method": method, "test_response_accuracy": accuracy, "best_step": 5, "stopped_step": 9,
                "wall_seconds": seconds}  # fmt: skip

    (tmp_path / BENCH_FILE).write_text(json.dumps(bench("GPU", 2.0, 3.0, ["lookahead", "implicit-gn"])))
    (tmp_path / "cpu.json").write_text(json.dumps(bench("cpu", 8.0, 20.0, ["lookahead"])))
    (tmp_path / "meta_net").mkdir()
    (tmp_path / "meta_net/results.json").write_text(json.dumps([record("meta_net", 0.75, 100.0)]))
    (tmp_path / "cpu_runs.json").write_text(json.dumps([record("union", 0.7, 50.0), record("meta_net", 0.77, 1000.0)]))
    text = report(str(tmp_path), str(tmp_path / "cpu.json"), str(tmp_path / "cpu_runs.json"))
    # step times: CPU/GPU speed-up, and the multiple of union's step on each
    assert "| union | 8.00 | 2.00 | 4.0 | 1.00 | 1.00 |" in text
    assert "| meta_net | 20.00 | 3.00 | 6.7 | 2.50 | 1.50 |" in text
    assert "| meta_net (implicit-gn) | — | 3.00 | — | — | 1.50 |" in text  # timed on the GPU alone
    # the GPU's meta_net run beside the CPU's meta_net run (not union's), with the wall-time ratio
    assert "| meta_net | 2 CPU cores | 77.00 | 5 | 9 | 1000 |" in text
    assert "| meta_net | GPU | 75.00 | 5 | 9 | 100 (10.0× faster) |" in text
    assert "union | 2 CPU cores" not in text


def test_the_gpu_table_regenerates_from_the_committed_runs_and_is_the_readmes():
    from tools.gpu_report import BENCH_FILE, report
    from tools.publish import published_block

    gpu = ROOT / "results/dialog_gpu"
    text = report(
        str(gpu),
        str(ROOT / "results/bench" / BENCH_FILE),
        str(ROOT / "results/dialog_sweep/profiles/female_elderly/results.json"),
    )
    assert text == (gpu / "summary.md").read_text()
    assert published_block((ROOT / "README.md").read_text(), "dialog_gpu") == text.strip("\n")
