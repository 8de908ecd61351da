"""Config layering: defaults <- TOML table <- command-line flags."""
import argparse
import re
import tomllib
from pathlib import Path

import pytest

from vidmine.cli import ENVIRONMENT, add_store_args, storage_config
from vidmine.config import ConfigError, add_config_args, build_config, load_toml
from vidmine.storage.store import StorageConfig


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


def test_environment_sits_between_toml_and_flags(tmp_path, monkeypatch):
    toml = tmp_path / "v.toml"
    toml.write_text('[storage]\nworkdir = "/from/toml"\nshards_dir = "/toml/shards"\n')
    monkeypatch.setenv("VIDMINE_WORKDIR", "/from/env")
    monkeypatch.setenv("VIDMINE_SHARDS_DIR", "/env/shards")
    parser = argparse.ArgumentParser()
    add_store_args(parser)
    cfg = storage_config(parser.parse_args(["--config", str(toml)]))
    assert cfg.workdir == "/from/env" and cfg.shards_dir == "/env/shards"
    cfg = storage_config(parser.parse_args(["--config", str(toml), "--workdir", "/flag"]))
    assert cfg.workdir == "/flag"


def test_compose_file_runs_the_console_scripts_with_vidmine_environment():
    """No Docker engine here: check the compose file names real entry points and env vars."""
    root = Path(__file__).resolve().parents[1]
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    compose = (root / "docker" / "compose.yaml").read_text()
    commands = re.findall(r'command: \["(vidmine-[a-z]+)"', compose)
    assert commands and set(commands) <= set(scripts)
    used = set(re.findall(r"\b(VIDMINE_[A-Z_]+):", compose))
    assert used and used <= set(ENVIRONMENT.values())
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.cuda"):
        text = (root / "docker" / dockerfile).read_text()
        for package in ("vidmine", "mining", "graph", "storage", "training", "evaluation"):
            assert f"COPY {package} {package}" in text
