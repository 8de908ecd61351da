"""What every vidmine command line shares: one parser pattern, the store flags, the TOML
file, ``--json``, and one-line errors.

Each package's ``cli.py`` is built the same way::

    def build_parser():
        parser, commands = command_parser(PROG, __doc__)
        p = add_command(commands, "stats", cmd_stats, "figures of the graph")
        p.add_argument(...)
        return parser

    def main(argv=None):
        return run_main(PROG, build_parser, argv)

A command is a function ``cmd_x(args) -> exit code``. A user error (:class:`UsageError`,
a bad setting, a store that cannot be opened) prints ``vidmine-x: error: ...`` and exits 2
instead of showing a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from vidmine.config import add_config_args, build_config, load_toml
from vidmine.errors import UsageError, VidmineError
from vidmine.storage.store import StorageConfig, Store
from vidmine.text import safe_name, safe_text

T = TypeVar("T")
# Containers configure vidmine through the environment (docker/compose.yaml).
ENVIRONMENT = {"workdir": "VIDMINE_WORKDIR", "db": "VIDMINE_DB", "shards_dir": "VIDMINE_SHARDS_DIR"}


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is a UsageError: one line like every other error
    (argparse would print the whole usage first), and ``main()`` returns 2 instead of
    raising SystemExit."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def command_parser(prog: str, doc: str | None) -> tuple[argparse.ArgumentParser, Any]:
    """The top-level parser of a console script and the group its subcommands join."""
    parser = _Parser(prog=prog, description=doc,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser, parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def add_command(commands, name: str, fn: Callable[[argparse.Namespace], int | None],
                help_text: str, *, store: bool = True, settings: Sequence[type] = (),
                json_flag: bool = True) -> argparse.ArgumentParser:
    """One subcommand running ``fn(args)``: with the store flags, ``--SETTING`` flags of
    each dataclass in ``settings``, and ``--json`` unless told otherwise."""
    p = commands.add_parser(name, help=help_text, description=help_text)
    if store:
        add_store_args(p)
    for cls in settings:
        add_config_args(p, cls)
    if json_flag:
        add_json_flag(p)
    p.set_defaults(fn=fn)
    return p


def add_store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default=None,
                        help="work directory with the index and crop shards (default ./vidmine-data)")
    parser.add_argument("--db", default=None,
                        help="database URL, e.g. postgresql://user@host/db (default: SQLite in "
                             "the workdir; env VIDMINE_DB)")
    parser.add_argument("--shards-dir", default=None,
                        help="where crop shards live (default <workdir>/shards; env VIDMINE_SHARDS_DIR)")
    parser.add_argument("--config", default=None, help="TOML file with [storage], [mining], ... tables")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object and nothing else (no progress bars)")


def settings(args: argparse.Namespace, cls: type[T], section: str) -> T:
    """Dataclass ``cls``: defaults <- table ``[section]`` of --config <- flags given."""
    return build_config(cls, args, load_toml(getattr(args, "config", None)), section)


def storage_config(args: argparse.Namespace) -> StorageConfig:
    """Defaults <- [storage] of the TOML file <- environment <- flags."""
    toml = load_toml(getattr(args, "config", None))
    table = dict(toml.get("storage", {}))
    table.update({k: os.environ[v] for k, v in ENVIRONMENT.items() if os.environ.get(v)})
    return build_config(StorageConfig, args, {"storage": table}, "storage")


def open_store(args: argparse.Namespace, create: bool = False) -> Store:
    return Store(storage_config(args), create=create)


MAX_ROW_ID = 2**63 - 1   # SQL BIGINT


def row_id(text: str) -> int:
    """argparse type of a row id (crop, pair, video): a whole number that fits a BIGINT."""
    value = _whole(text, 1)
    if value > MAX_ROW_ID:
        raise argparse.ArgumentTypeError(f"no row has id {text} (ids run from 1 to {MAX_ROW_ID})")
    return value


def count(text: str) -> int:
    """argparse type of a count that must be at least 1 (videos, rows, objects...)."""
    return _whole(text, 1)


def natural(text: str) -> int:
    """argparse type of a whole number >= 0 (a seed, a radius)."""
    return _whole(text, 0)


def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
    return value


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def emit(args: argparse.Namespace, obj: Any, text: str) -> None:
    """``obj`` as one JSON object with --json, else ``text`` for a person."""
    if getattr(args, "json", False):
        print_json(obj)
    else:
        print(safe_text(text))


def format_lines(obj: dict, indent: str = "") -> str:
    """A nested dict as indented ``key: value`` lines."""
    out = []
    for k, v in obj.items():
        if isinstance(v, dict):
            out.append(f"{indent}{k}:")
            out.append(format_lines(v, indent + "  "))
        else:
            out.append(f"{indent}{k}: {v}")
    return "\n".join(line for line in out if line)


def _with_default_command(parser: argparse.ArgumentParser, argv: list[str],
                          default: str | None) -> list[str]:
    if default is None:
        return argv
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if not argv or argv[0] not in set(commands.choices) | {"-h", "--help"}:
        return [default, *argv]
    return argv


def run_main(prog: str, build_parser: Callable[[], argparse.ArgumentParser],
             argv: list[str] | None = None, default_command: str | None = None) -> int:
    """Parse ``argv``, run the chosen command, and turn user errors into one line + exit 2."""
    try:
        parser = build_parser()
        argv = _with_default_command(parser, list(sys.argv[1:] if argv is None else argv),
                                     default_command)
        args = parser.parse_args(argv)
        return int(args.fn(args) or 0)
    except (VidmineError, FileNotFoundError) as exc:
        print(f"{prog}: error: {safe_name(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130

