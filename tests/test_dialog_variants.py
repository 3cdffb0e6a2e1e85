"""Named dialog config variants (experiments/dialog/configs/variants.py, experiments/dialog/variants.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.dialog.configs import variants as variant_configs
from experiments.dialog.configs.fixed_budget import get_config
from experiments.dialog.variants import variant_config

ROOT = Path(__file__).resolve().parents[1]


def test_a_variant_is_the_default_config_with_its_changes():
    config = variant_configs.get_config("authors_steps")
    default = get_config()
    changed = {k for k in default.keys() if config[k] != default[k]}
    assert changed == {"separate_target_step", "target_in_inner"}
    assert config.separate_target_step is True and config.target_in_inner is False


def test_variant_config_applies_the_changes_to_a_copy():
    base = get_config()
    base.methods = ("meta_net",)
    config = variant_config(base, "raw_weights")
    assert config.normalize_weights is False and config.methods == ("meta_net",)
    assert base.normalize_weights is True  # the base config is not changed


def test_unknown_variant_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"--variants: nope not known; variants: authors_steps"):
        variant_config(get_config(), "nope")
    with pytest.raises(ValueError, match="no variant 'nope'; variants: authors_steps"):
        variant_configs.get_config("nope")


@pytest.mark.parametrize("folder", sorted(p.name for p in (ROOT / "results/dialog_variants").iterdir() if p.is_dir()))
def test_every_published_variant_workdir_was_run_with_its_named_config(folder):
    """The committed variant workdirs hold runs of exactly the config their variant names."""
    saved = json.loads((ROOT / "results/dialog_variants" / folder / "config.json").read_text())
    config = json.loads(variant_configs.get_config(folder).to_json())
    ignore = {"methods", "target_dialogs", "num_seeds", "log_every"}  # chosen on the command line
    assert {k: v for k, v in saved.items() if k not in ignore} == {
        k: v for k, v in config.items() if k not in ignore and k in saved
    }


def test_every_variant_config_is_checked_before_any_data_is_read(tmp_path):
    from experiments.dialog.variants import run

    config = get_config()
    config.hops = 0
    with pytest.raises(ValueError, match=r"config\.hops must be positive"):
        run(config, str(tmp_path / "w"), ["raw_weights"])
    assert not (tmp_path / "w").exists()
