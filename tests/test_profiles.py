"""The params profiles under pipeline/profiles/ stay valid as the schema evolves."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deblur import config
from deblur.errors import ConfigError

PROFILES = Path(__file__).resolve().parents[1] / "pipeline" / "profiles"


@pytest.mark.parametrize("name", ["smoke", "seed-paper"])
def test_profile_parses(name):
    params = config.load(PROFILES / f"{name}.yaml")
    assert params.data.source == "synthetic"


def test_gopro_profile_asks_for_the_checksum_then_parses():
    path = PROFILES / "gopro-full.yaml"
    with pytest.raises(ConfigError, match="sha256"):
        config.load(path)
    raw = yaml.safe_load(path.read_text())
    raw["data"]["sha256"] = "0" * 64
    params = config.parse(raw)
    assert params.data.source == "gopro" and params.train.gan.crop == 256


def test_params_yaml_spells_out_every_key():
    """`dvc exp run -S key=value` and DVC's params tracking only see keys in params.yaml."""
    from deblur.tracking import flatten

    raw = yaml.safe_load((PROFILES.parents[1] / "params.yaml").read_text())
    schema = config.parse({}).model_dump(mode="json", by_alias=True)
    assert set(flatten(raw)) == set(flatten(schema))
