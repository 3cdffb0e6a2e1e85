"""The run store (experiments/shared/store.py): which workdirs a config may resume, and crash-safe outputs."""

from __future__ import annotations

import json

import pytest

from experiments.dialog.configs import default as dialog_config
from experiments.ideal.configs import default as ideal_config
from experiments.shared.store import RunStore


def test_workdir_of_another_config_is_refused(tmp_path):
    RunStore(str(tmp_path), ideal_config.get_config()).save("summary\n")  # a workdir with runs
    more = ideal_config.get_config()
    more.num_seeds, more.methods = 7, ("meta_net",)  # more or other runs of the same config: allowed
    RunStore(str(tmp_path), more)
    other = ideal_config.get_config()
    other.learning_rate = 0.5
    with pytest.raises(
        ValueError,
        match=r"config.json: the workdir holds runs of a different config \(fields "
        r"\['learning_rate'\]",
    ):
        RunStore(str(tmp_path), other)


def test_a_workdir_without_runs_takes_the_new_config(tmp_path):
    RunStore(str(tmp_path), ideal_config.get_config())  # e.g. a launcher that stopped on a data error
    other = ideal_config.get_config()
    other.learning_rate = 0.5
    RunStore(str(tmp_path), other)
    assert json.loads((tmp_path / "config.json").read_text())["learning_rate"] == 0.5


def test_a_field_added_later_matches_at_the_value_that_reproduces_old_runs(tmp_path):
    old = dialog_config.get_config()
    del old["separate_target_step"]  # a workdir saved before the field existed
    RunStore(str(tmp_path), old).save("summary\n")
    RunStore(str(tmp_path), dialog_config.get_config())  # the field at the value of the old runs: allowed
    changed = dialog_config.get_config()
    changed.separate_target_step = True
    with pytest.raises(ValueError, match=r"\['separate_target_step'\]"):
        RunStore(str(tmp_path), changed)


def test_save_writes_weights_before_the_records_that_mark_runs_done(tmp_path):
    store = RunStore(str(tmp_path), ideal_config.get_config())
    store.records.append({"method": "meta_net", "seed": 0})
    written = store.save("summary\n", {"runs": [{"method": "meta_net", "seed": 0, "weights": [0.5]}]})
    assert [p.rsplit("/", 1)[1] for p in written] == ["related_weights.json", "results.json", "summary.md"]
    reopened = RunStore(str(tmp_path), ideal_config.get_config())
    assert reopened.done(method="meta_net", seed=0) == {"method": "meta_net", "seed": 0}
    assert reopened.finished_weight_runs(("method", "seed"))[0]["weights"] == [0.5]
    # weights of a run whose record was never written (killed in between) are dropped
    (tmp_path / "related_weights.json").write_text(json.dumps({"runs": [{"method": "union", "seed": 3}]}))
    assert reopened.finished_weight_runs(("method", "seed")) == []


def test_no_workdir_writes_nothing(tmp_path):
    store = RunStore(None, ideal_config.get_config())
    assert store.save("x") == [] and store.checkpointer("a") is None and store.metrics_log("a", {}) is None
