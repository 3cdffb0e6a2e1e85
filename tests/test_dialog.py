"""The memory network and the dialog launcher (a smoke configuration)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.dialog import get_config
from experiments import dialog
from metadial.models.memn2n import MemN2N, MemoryGate, candidate_bag_of_words, flat_candidates

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 12


def random_tokens(key, shape, density=0.6):
    k1, k2 = jax.random.split(key)
    tokens = jax.random.randint(k1, shape, 1, VOCAB)
    return jnp.where(jax.random.uniform(k2, shape) < density, tokens, 0)


def test_flat_candidate_embedding_equals_padded_sum():
    cands = np.array(random_tokens(jax.random.PRNGKey(0), (7, 5)))
    cands[3] = 0  # an empty candidate
    embed = nn.Embed(VOCAB, 4)
    params = embed.init(jax.random.PRNGKey(1), jnp.zeros((1,), jnp.int32))
    flat = {k: jnp.asarray(v) for k, v in flat_candidates(cands).items()}
    got = embed.apply(params, flat, method=lambda m, c: candidate_bag_of_words(m, c))
    table = params["params"]["embedding"]
    expected = np.stack([table[row[row > 0]].sum(0) for row in cands])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def model_inputs(memory_slots=6):
    memory = random_tokens(jax.random.PRNGKey(2), (3, memory_slots, 5)).at[:, :2].set(0)  # 2 empty slots
    memory = memory.at[2].set(0)  # example 2 has an empty memory
    query = random_tokens(jax.random.PRNGKey(3), (3, 5))
    cands = {k: jnp.asarray(v) for k, v in flat_candidates(np.asarray(random_tokens(jax.random.PRNGKey(4), (9, 4)))).items()}
    return memory, query, cands


def test_memn2n_ignores_padding_slots_and_handles_empty_memory():
    model = MemN2N(VOCAB, embedding_size=8, hops=3)
    memory, query, cands = model_inputs()
    task = jnp.array([0, 1, 0])
    params = model.init(jax.random.PRNGKey(5), memory, query, cands, task)
    logits = model.apply(params, memory, query, cands, task)
    assert logits.shape == (3, 9) and np.isfinite(np.asarray(logits)).all()
    more_padding = jnp.concatenate([jnp.zeros((3, 4, 5), memory.dtype), memory], axis=1)
    np.testing.assert_allclose(model.apply(params, more_padding, query, cands, task), logits, rtol=1e-5, atol=1e-6)
    # the target projection starts at the identity: both tasks score alike until it is trained
    np.testing.assert_allclose(model.apply(params, memory, query, cands, jnp.array([1, 1, 1])), logits, rtol=1e-6)
    gate = MemoryGate(VOCAB, 8)
    scores = gate.apply(gate.init(jax.random.PRNGKey(6), memory, query), memory, query)
    assert scores.shape == (3,) and np.isfinite(np.asarray(scores)).all()


def smoke_args(workdir):
    return [sys.executable, "-m", "experiments.dialog", "--config=configs/dialog.py", f"--workdir={workdir}",
            "--config.max_dialogs=4", "--config.target_dialogs=3", "--config.train_steps=4",
            "--config.eval_every=2", "--config.num_seeds=1", "--config.eval_batch_size=64"]


def test_dialog_launcher_smoke(tmp_path):
    subprocess.run(smoke_args(tmp_path), cwd=ROOT, check=True, capture_output=True, timeout=300)
    records = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in records] == list(dialog.METHODS)
    keys = {"method", "seed", "target_dialogs", "test_response_accuracy", "test_dialog_accuracy",
            "oov_response_accuracy", "oov_dialog_accuracy", "dev_response_accuracy", "train_steps", "wall_seconds"}
    for r in records:
        assert keys <= set(r) and r["target_dialogs"] == 3 and r["train_steps"] == 4
        for k in keys - {"method", "seed", "target_dialogs", "train_steps", "wall_seconds"}:
            assert 0.0 <= r[k] <= 1.0
    weights = json.loads((tmp_path / "related_weights.json").read_text())
    assert [run["method"] for run in weights["runs"]] == list(dialog.WEIGHTED)
    n = len(weights["examples"])
    assert n > 0 and all(len(run["weights"]) == n for run in weights["runs"])
    assert set(weights["examples"][0]) == {"example_id", "dialog_id", "turn", "bot", "kind"}
    summary = (tmp_path / "summary.md").read_text()
    assert "| meta_net | 3 | 1 |" in summary and "api_call" in summary and "by kind of target bot turn" in summary
    for r in records:
        assert r["test_accuracy_by_kind"] and all(0.0 <= v <= 1.0 for v in r["test_accuracy_by_kind"].values())

    # the rescore tool rebuilds the per-kind accuracy of older records from the runs' checkpoints
    from experiments import dialog_rescore

    stripped = [{k: v for k, v in r.items() if k != "test_accuracy_by_kind"} for r in records]
    (tmp_path / "results.json").write_text(json.dumps(stripped))
    config = get_config()
    config.update(dict(max_dialogs=4, target_dialogs=(3,), train_steps=4, eval_every=2, num_seeds=1, eval_batch_size=64))
    rescored = dialog_rescore.rescore(config, str(tmp_path))
    assert [r["test_accuracy_by_kind"] for r in rescored] == [r["test_accuracy_by_kind"] for r in records]
    assert json.loads((tmp_path / "results.json").read_text()) == rescored


@pytest.mark.parametrize("override, message", [
    (dict(methods=("target_only", "oracle")), "allowed: target_only"),
    (dict(target_dialogs=(100, -5)), "target_dialogs must be positive"),
    (dict(data_dir="/nonexistent"), "no such file: /nonexistent/"),
    (dict(max_dialogs=3, target_dialogs=(10,)), "exceeds the 3 training dialogs"),
    (dict(outer_batch="dev"), "outer_batch must be one of"),
])
def test_dialog_launcher_rejects_bad_config_before_training(tmp_path, override, message):
    config = get_config()
    config.update(override)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        dialog.run(config, str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_dialog_launcher_runs_fresh_inner_batches_and_the_inner_target_batch_as_outer(tmp_path):
    config = get_config()
    config.update(dict(max_dialogs=4, target_dialogs=(3,), train_steps=2, eval_every=2, num_seeds=1,
                       eval_batch_size=64, methods=("meta_net",), inner_steps=2,
                       fresh_inner_batches=True, outer_batch="target", tensorboard=False))
    records = dialog.run(config, str(tmp_path))
    assert [r["method"] for r in records] == ["meta_net"]
    assert all(0.0 <= r["test_response_accuracy"] <= 1.0 and r["train_steps"] == 2 for r in records)
    weights = json.loads((tmp_path / "related_weights.json").read_text())
    assert all(0.0 < w < 1.0 for run in weights["runs"] for w in run["weights"])


def test_variants_parse_overrides_and_refuse_bad_ones():
    from experiments.variants import parse_variants, variant_config

    variants = parse_variants("raw:normalize_weights=False,meta_learning_rate=0.01; k2:inner_steps=2")
    assert variants == [("raw", {"normalize_weights": False, "meta_learning_rate": 0.01}), ("k2", {"inner_steps": 2})]
    config = variant_config(get_config(), variants[0][1])
    assert config.normalize_weights is False and config.meta_learning_rate == 0.01
    assert get_config().normalize_weights is True  # the base config is not changed
    for text, message in [("raw", "NAME:FIELD=VALUE"), ("default:seed=1", "not 'default'"), ("a:seed", "FIELD=VALUE"),
                          ("", "no variant")]:
        with pytest.raises(ValueError, match=message):
            parse_variants(text)
    with pytest.raises(ValueError, match="unknown config field 'nope'"):
        variant_config(get_config(), {"nope": 1})
    with pytest.raises(TypeError, match="inner_steps"):
        variant_config(get_config(), {"inner_steps": 0.5})


def test_published_dialog_tables_match_their_results():
    """README and results/dialog.md hold the tables derived from the committed results files."""
    from experiments.publish import published_block
    from metadial.data.babi_dialog import bot_turn_kind

    records = json.loads((ROOT / "results/dialog/results.json").read_text())
    weights = json.loads((ROOT / "results/dialog/related_weights.json").read_text())
    kinds = [bot_turn_kind(e["bot"]) for e in weights["examples"]]
    summary = (ROOT / "results/dialog/summary.md").read_text()
    assert summary == dialog.summarize(records, weights["runs"], kinds, get_config())
    assert published_block((ROOT / "README.md").read_text(), "dialog") == summary.strip("\n")
    notes = (ROOT / "results/dialog.md").read_text()
    for name in ("dialog", "dialog_variants", "dialog_budget", "dialog_horizon"):
        folder = ROOT / "results" / name
        assert published_block(notes, name) == (folder / "summary.md").read_text().strip("\n"), name
