"""vidmine-store: the consistency of a store and the upkeep of its shards.

    vidmine-store verify [--repair] [--json]      crop rows vs shard bytes, graph invariants
    vidmine-store merge [--into NAME] [SHARD ...]  merge sealed shards into one
    vidmine-store relocate DEST_DIR [--move]       copy sealed shards to another disk
"""
from __future__ import annotations

import sys

from vidmine.cli import add_command, command_parser, emit, format_lines, open_store, run_main

from .maintenance import merge_shards, relocate_shards
from .verify import verify

PROG = "vidmine-store"
SHOWN_IN_TEXT, SHOWN_IN_JSON = 20, 10_000


def cmd_verify(args) -> int:
    with open_store(args) as store:
        report = verify(store, repair=args.repair, progress=not args.json)
    result = report.as_dict()
    lost = [(i, s, k, "bytes missing") for i, s, k in report.rows_without_bytes]
    result["damaged"] = [{"crop": i, "shard": s, "key": k, "reason": why}
                         for i, s, k, why in (lost + report.damaged_crops)[:SHOWN_IN_JSON]]
    text = format_lines({k: v for k, v in result.items() if k not in ("examples", "damaged")})
    named = [f"  crop {i} ({s}/{k}): {why}" for i, s, k, why in (lost + report.damaged_crops)]
    if named:
        text += "\ndamaged or lost crops:\n" + "\n".join(named[:SHOWN_IN_TEXT])
        if len(named) > SHOWN_IN_TEXT:
            text += f"\n  ... and {len(named) - SHOWN_IN_TEXT} more (--json lists them)"
    if not report.ok and not args.repair:
        text += "\nrun `vidmine-store verify --repair` to repair (crops lost are mined again)"
    emit(args, result, text)
    return 0 if report.ok or args.repair else 1


def cmd_merge(args) -> int:
    with open_store(args) as store:
        result = merge_shards(store, args.shards or None, args.into)
    emit(args, result, format_lines(result))
    return 0


def cmd_relocate(args) -> int:
    with open_store(args) as store:
        result = relocate_shards(store, args.dest, args.move)
    emit(args, result, format_lines(result))
    return 0


def build_parser():
    parser, commands = command_parser(PROG, __doc__)
    p = add_command(commands, "verify", cmd_verify,
                    "rows without bytes, bytes without rows, and the graph's invariants")
    p.add_argument("--repair", action="store_true", help="delete orphans, seal dead shards")
    p = add_command(commands, "merge", cmd_merge, "merge sealed shards into one")
    p.add_argument("shards", nargs="*", help="shard names (default: all sealed shards)")
    p.add_argument("--into", help="name of the new shard")
    p = add_command(commands, "relocate", cmd_relocate, "copy sealed shards to another directory")
    p.add_argument("dest")
    p.add_argument("--move", action="store_true", help="delete the originals after copying")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
