"""The params profiles under pipeline/profiles/: deltas over params.yaml that stay valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deblur import config
from deblur.config import flatten
from deblur.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "pipeline" / "profiles"
NAMES = sorted(p.stem for p in PROFILES.glob("*.yaml"))


def _own_keys(path: Path) -> set[str]:
    raw = yaml.safe_load(path.read_text())
    raw.pop("extends")
    return set(flatten(raw))


@pytest.mark.parametrize("name", NAMES)
def test_a_profile_holds_only_keys_params_yaml_has(name):
    """A misspelt key would otherwise be a new key that changes nothing."""
    base = set(flatten(yaml.safe_load((ROOT / "params.yaml").read_text())))
    own = _own_keys(PROFILES / f"{name}.yaml")
    assert own and own <= base, sorted(own - base)


@pytest.mark.parametrize("name", NAMES)
def test_a_profile_changes_every_key_it_holds(name):
    """A key equal to params.yaml's is a copy, and a copy goes stale when the default moves."""
    base = flatten(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw = yaml.safe_load((PROFILES / f"{name}.yaml").read_text())
    raw.pop("extends")
    same = [key for key, value in flatten(raw).items() if base[key] == value]
    assert not same, f"{name}.yaml repeats params.yaml's {same}"


def test_a_profile_follows_a_changed_default(tmp_path):
    """The point of deltas: a default changed in params.yaml reaches every profile."""
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    base["data"]["synthetic"]["shift"] = 4.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "profiles").mkdir()
    text = (PROFILES / "smoke.yaml").read_text().replace("../../params.yaml", "../params.yaml")
    (tmp_path / "profiles" / "smoke.yaml").write_text(text)
    params = config.load(tmp_path / "profiles" / "smoke.yaml")
    assert params.data.synthetic.shift == 4.5
    assert params.data.synthetic.train_scenes == 3  # and the profile's own value holds


@pytest.mark.parametrize("name", ["smoke", "seed-paper"])
def test_profile_parses(name):
    params = config.load(PROFILES / f"{name}.yaml")
    assert params.data.source == "synthetic"


def test_gopro_profile_asks_for_the_checksum_then_parses():
    path = PROFILES / "gopro-full.yaml"
    with pytest.raises(ConfigError, match="sha256"):
        config.load(path)
    raw = config.load_raw(path)
    raw["data"]["sha256"] = "0" * 64
    params = config.parse(raw)
    assert params.data.source == "gopro" and params.train.gan.crop == 256


def test_an_extends_loop_is_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nseed: 1\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nseed: 2\n")
    with pytest.raises(ConfigError, match="extends itself"):
        config.load(tmp_path / "a.yaml")


def test_profile_command_writes_a_params_file_dvc_reads(tmp_path):
    """`deblur profile smoke -o params.yaml`: a whole file, every key spelt out."""
    out = tmp_path / "params.yaml"
    subprocess.run(
        [sys.executable, "-m", "deblur", "profile", "smoke", "-o", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    raw = yaml.safe_load(out.read_text())
    assert raw["train"]["gan"]["epochs"] == 1
    assert set(flatten(raw)) == set(flatten(yaml.safe_load((ROOT / "params.yaml").read_text())))
    bad = subprocess.run(
        [sys.executable, "-m", "deblur", "profile", "nope"], cwd=ROOT, capture_output=True
    )
    assert bad.returncode == 2 and b"no profile 'nope'" in bad.stderr
    assert b"Traceback" not in bad.stderr


def test_params_yaml_spells_out_every_key():
    """`dvc exp run -S key=value` and DVC's params tracking only see keys in params.yaml."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    schema = config.parse({}).model_dump(mode="json", by_alias=True)
    assert set(flatten(raw)) == set(flatten(schema))


def test_schema_defaults_are_params_yaml_value_for_value():
    """One set of defaults: a key a profile or a test leaves out means params.yaml's value."""
    raw = flatten(yaml.safe_load((ROOT / "params.yaml").read_text()))
    schema = flatten(config.parse({}).model_dump(mode="json", by_alias=True))
    differ = {
        key: (schema.get(key), value)
        for key, value in raw.items()
        if schema.get(key) != value or type(schema.get(key)) is not type(value)
    }
    assert not differ, f"config.py default vs params.yaml: {differ}"
