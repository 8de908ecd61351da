"""Config layering: defaults <- TOML table <- command-line flags."""
import argparse

import pytest

from storage.config import ConfigError, add_config_args, build_config, load_toml
from storage.store import StorageConfig


def test_toml_then_flags_override_defaults(tmp_path):
    toml = tmp_path / "vidmine.toml"
    toml.write_text('[storage]\nworkdir = "/data/w"\njpeg_quality = 80\n')
    parser = argparse.ArgumentParser()
    add_config_args(parser, StorageConfig)
    args = parser.parse_args(["--jpeg-quality", "70"])
    cfg = build_config(StorageConfig, args, load_toml(toml), "storage")
    assert cfg.workdir == "/data/w" and cfg.jpeg_quality == 70 and cfg.initial_map_mb == 64


def test_config_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[storage]\nno_such_setting = 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        build_config(StorageConfig, None, load_toml(bad), "storage")
    bad.write_text("[storage\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_toml(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="jpeg_quality"):
        build_config(StorageConfig, None, {"storage": {"jpeg_quality": "high"}}, "storage")
