"""What every vidmine command line shares: the store flags, the TOML file, one-line errors.

Each package's ``cli.py`` builds its own argparse parser, calls :func:`add_common_args`, and
wraps its ``main`` in :func:`run_main`, so a user error prints ``vidmine-x: error: ...``
and exits 2 instead of showing a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from .config import ConfigError, build_config, load_toml
from .errors import StorageError
from .store import StorageConfig, Store


class UsageError(Exception):
    """A bad argument or state the user can fix; printed as one line."""


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default=None,
                        help="work directory with the index and crop shards (default ./vidmine-data)")
    parser.add_argument("--db", default=None,
                        help="database URL, e.g. postgresql://user@host/db (default: SQLite in "
                             "the workdir; env VIDMINE_DB)")
    parser.add_argument("--shards-dir", default=None,
                        help="where crop shards live (default <workdir>/shards; env VIDMINE_SHARDS_DIR)")
    parser.add_argument("--config", default=None, help="TOML file with [storage], [mining], ... tables")


# Containers configure vidmine through the environment (docker/compose.yaml).
ENVIRONMENT = {"workdir": "VIDMINE_WORKDIR", "db": "VIDMINE_DB", "shards_dir": "VIDMINE_SHARDS_DIR"}


def storage_config(args: argparse.Namespace) -> StorageConfig:
    """Defaults <- [storage] of the TOML file <- environment <- flags."""
    toml = load_toml(getattr(args, "config", None))
    table = dict(toml.get("storage", {}))
    table.update({k: os.environ[v] for k, v in ENVIRONMENT.items() if os.environ.get(v)})
    return build_config(StorageConfig, args, {"storage": table}, "storage")


def open_from_args(args: argparse.Namespace, create: bool = False) -> Store:
    return Store(storage_config(args), create=create)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def run_main(prog: str, main: Callable[[list[str] | None], int | None],
             argv: list[str] | None = None) -> int:
    try:
        return int(main(argv) or 0)
    except (UsageError, ConfigError, StorageError, FileNotFoundError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
