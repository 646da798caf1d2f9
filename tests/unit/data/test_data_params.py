"""params.yaml's data, validate and preprocess sections: bad values name the key."""

from __future__ import annotations

import pytest

from deblur import config
from deblur.errors import ConfigError


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ({"data": {"source": "ftp"}}, "data.source"),
        ({"data": {"source": "gopro"}}, "source gopro needs data.sha256"),
        ({"data": {"source": "gopro", "sha256": "abc"}}, "data.sha256"),
        ({"data": {"source": "folder"}}, "source folder needs data.folder"),
        ({"data": {"name": "../escape"}}, "data.name"),
        ({"data": {"name": ".."}}, "data.name"),
        ({"data": {"url": "ftp://example.org/x.zip"}}, "data.url"),
        ({"data": {"synthetic": {"frames": 8}}}, "data.synthetic.frames: must be odd"),
        ({"data": {"synthetic": {"frames": 1}}}, "data.synthetic.frames"),
        ({"data": {"synthetic": {"height": 8}}}, "data.synthetic.height"),
        ({"data": {"synthetic": {"train_scenes": 0}}}, "data.synthetic.train_scenes"),
        ({"data": {"synthetic": {"blurr": 3}}}, "unknown key 'data.synthetic.blurr'"),
        ({"validate": {"sharper_fraction": 1.5}}, "validate.sharper_fraction"),
        ({"validate": {"min_test_pairs": 0}}, "validate.min_test_pairs"),
        ({"preprocess": {"protocol": "squash"}}, "preprocess.protocol"),
        ({"preprocess": {"resize": {"gan": 8}}}, "preprocess.resize.gan"),
    ],
)
def test_bad_values_name_the_key(section, says):
    with pytest.raises(ConfigError, match=r"^params\.yaml: ") as err:
        config.parse(section, "params.yaml")
    assert says in str(err.value)
    assert "\n" not in str(err.value)


def test_defaults_are_valid_and_gopro_with_checksum_is_accepted():
    assert config.parse({}).data.source == "synthetic"
    params = config.parse({"data": {"source": "gopro", "sha256": "ab" * 32}})
    assert params.data.url.startswith("https://")
