"""``vidmine-mine``: run (mine a folder once), daemon (keep watching it), status, verify, synth.

    vidmine-mine run VIDEO_DIR [--workdir W] [--workers N] [--db URL]
    vidmine-mine daemon VIDEO_DIR ...
    vidmine-mine status [--json]
    vidmine-mine verify [--repair] [--json]
    vidmine-mine synth OUT_DIR [--videos N] [--seed S]
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from vidmine.storage.cliutil import (
    UsageError,
    add_common_args,
    open_from_args,
    print_json,
    run_main,
    storage_config,
)
from vidmine.storage.config import add_config_args, build_config, load_toml, to_dict
from vidmine.storage.store import Store
from vidmine.storage.verify import verify

from .config import MiningConfig

PROG = "vidmine-mine"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("run", "mine every video under VIDEO_DIR once"),
                            ("daemon", "keep watching VIDEO_DIR and mine new files")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("video_dir", metavar="VIDEO_DIR")
        p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
        p.add_argument("--sheet", default=None,
                       help="contact sheet PNG of the mined tracks (default: "
                            "<workdir>/reports/mining-tracks.png; 'none' to skip)")
        p.add_argument("--ray-address", default=None, help="Ray cluster address (executor ray)")
        add_common_args(p)
        add_config_args(p, MiningConfig)
    p = sub.add_parser("status", help="videos by status, tracks, crops, failures")
    p.add_argument("--json", action="store_true")
    add_common_args(p)
    p = sub.add_parser("verify", help="check that every crop row has its bytes and vice versa")
    p.add_argument("--repair", action="store_true", help="delete orphans, seal dead shards")
    p.add_argument("--json", action="store_true")
    add_common_args(p)
    p = sub.add_parser("synth", help="write synthetic videos with ground truth (for trying out)")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    return parser


def _mine(args, daemon: bool) -> int:
    from .executors import run_local, run_ray
    from .report import Progress, summary_table, track_sheet

    video_dir = Path(args.video_dir)
    if not video_dir.is_dir():
        raise UsageError(f"not a folder: {video_dir}")
    cfg = build_config(MiningConfig, args, load_toml(args.config), "mining")
    if daemon and cfg.executor == "ray":
        raise UsageError("the daemon runs the local executor; use 'run --executor ray'")
    store = Store(storage_config(args), create=True)
    run_id = store.index.start_run("mine", {"mining": to_dict(cfg),
                                            "video_dir": str(video_dir.resolve())})
    progress = Progress(enabled=not args.json)
    supervisor = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(_signum, _frame):
        for sup in supervisor:
            sup.stop()

    for s in previous:
        signal.signal(s, on_signal)
    try:
        if cfg.executor == "ray":
            summary = run_ray(store, cfg, video_dir, run_id=run_id, progress=progress,
                              address=args.ray_address)
        else:
            summary = run_local(store, cfg, video_dir, daemon=daemon, run_id=run_id,
                                progress=progress, supervisor_hook=supervisor.append)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        progress.close()
    store.index.finish_run(run_id, "failed" if summary.fatal else "done", summary.as_dict())
    out = summary.as_dict()
    if args.sheet != "none":
        sheet = Path(args.sheet) if args.sheet else store.subdir("reports") / "mining-tracks.png"
        written = track_sheet(store, sheet)
        out["contact_sheet"] = str(written) if written else None
    store.close()
    if args.json:
        print_json(out)
    else:
        print(summary_table(summary))
        if out.get("contact_sheet"):
            print(f"  contact sheet   {out['contact_sheet']}")
    if summary.fatal:
        print(f"{PROG}: error: {summary.fatal}", file=sys.stderr)
        return 1
    return 0


def _status(args) -> int:
    from .report import status, status_text
    store = open_from_args(args)
    try:
        st = status(store)
    finally:
        store.close()
    print_json(st) if args.json else print(status_text(st))
    return 0


def _verify(args) -> int:
    store = open_from_args(args)
    try:
        report = verify(store, repair=args.repair)
    finally:
        store.close()
    d = report.as_dict()
    if args.json:
        print_json(d)
    else:
        print(f"crop rows {d['rows']}, stored items {d['stored_items']}: "
              + ("consistent" if report.ok else
                 f"{d['rows_without_bytes']} rows without bytes, "
                 f"{d['bytes_without_rows']} bytes without rows")
              + (f"; repaired {d['repaired_rows']} rows, {d['repaired_bytes']} items"
                 if args.repair else ""))
    return 0 if report.ok or args.repair else 1


def _synth(args) -> int:
    from .synthetic import generate_dataset
    paths = generate_dataset(args.out_dir, n_videos=args.videos, seed=args.seed)
    for p in paths:
        print(p)
    return 0


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("run", "daemon"):
        return _mine(args, daemon=args.command == "daemon")
    return {"status": _status, "verify": _verify, "synth": _synth}[args.command](args)


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
