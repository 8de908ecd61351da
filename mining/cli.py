"""``vidmine-mine``: run (mine a folder once), daemon (keep watching it), status, synth.

    vidmine-mine run VIDEO_DIR [--workdir W] [--workers N] [--db URL]
    vidmine-mine daemon VIDEO_DIR ...
    vidmine-mine status [--json]
    vidmine-mine retry [--skipped] [VIDEO ...]    queue failed videos again (after a fix)
    vidmine-mine synth OUT_DIR [--videos N] [--seed S] [--kind flat|solids] [--pool train|heldout]
                                        [--pool-size N]
    vidmine-mine synth-sets OUT_DIR [--objects-per-category N]   rendered invariance sets

``vidmine-store verify`` checks what mining stored.
"""
from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from vidmine.cli import (
    add_command,
    command_parser,
    count,
    emit,
    natural,
    open_store,
    run_main,
    settings,
    storage_config,
)
from vidmine.config import to_dict
from vidmine.errors import UsageError
from vidmine.storage.store import Store
from vidmine.text import safe_name

from .config import MiningConfig

PROG = "vidmine-mine"


def _mine(args, daemon: bool) -> int:
    from .report import Progress, summary_table, track_sheet

    video_dir = Path(args.video_dir)
    if not video_dir.is_dir():
        raise UsageError(f"not a folder: {video_dir}")
    cfg = settings(args, MiningConfig, "mining")
    if daemon and cfg.executor == "ray":
        raise UsageError("the daemon runs the local executor; use 'run --executor ray'")
    with _stop_on_signal() as stop_hook, Store(storage_config(args), create=True) as store:
        with store.index.run("mine", {"mining": to_dict(cfg),
                                      "video_dir": str(video_dir.resolve())}) as run:
            summary = _execute(args, cfg, store, video_dir, daemon, run.id,
                               Progress(enabled=not args.json), stop_hook)
            run.status = "failed" if summary.fatal else "done"
            run.summary = summary.as_dict()
        out = summary.as_dict()
        if args.sheet != "none":
            sheet = Path(args.sheet) if args.sheet else store.subdir("reports") / "mining-tracks.png"
            written = track_sheet(store, sheet)
            out["contact_sheet"] = str(written) if written else None
    contact = f"\n  contact sheet   {out['contact_sheet']}" if out.get("contact_sheet") else ""
    emit(args, out, summary_table(summary) + contact)
    if summary.fatal:
        print(f"{PROG}: error: {safe_name(summary.fatal)}", file=sys.stderr)
        return 1
    return 0


@contextmanager
def _stop_on_signal():
    """SIGTERM/SIGINT stop the local supervisor (workers give back and seal), also when the
    signal comes before the supervisor exists (a daemon stopped while it opens the store):
    mining then starts no worker and the summary is still printed. A second signal stops
    waiting (KeyboardInterrupt), e.g. for a store that does not answer.

    Yields the hook that registers a supervisor.
    """
    supervisors, signalled = [], []
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(_signum, _frame):
        if signalled:
            raise KeyboardInterrupt
        signalled.append(True)
        for sup in supervisors:
            sup.stop()

    def register(sup) -> None:
        supervisors.append(sup)
        if signalled:
            sup.stop()

    for s in previous:
        signal.signal(s, on_signal)
    try:
        yield register
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _execute(args, cfg, store, video_dir, daemon, run_id, progress, stop_hook):
    """Run the executor (local, or Ray for ``run --executor ray``)."""
    from .executors import run_local, run_ray
    try:
        if cfg.executor == "ray":
            return run_ray(store, cfg, video_dir, run_id=run_id, progress=progress,
                           address=args.ray_address)
        return run_local(store, cfg, video_dir, daemon=daemon, run_id=run_id,
                         progress=progress, supervisor_hook=stop_hook)
    finally:
        progress.close()


def cmd_run(args) -> int:
    return _mine(args, daemon=False)


def cmd_daemon(args) -> int:
    return _mine(args, daemon=True)


def cmd_status(args) -> int:
    from .report import status, status_text
    with open_store(args) as store:
        st = status(store)
    emit(args, st, status_text(st))
    return 0


def cmd_retry(args) -> int:
    statuses = ("failed", "skipped") if args.skipped else ("failed",)
    with open_store(args) as store:
        paths = [str(Path(p).absolute()) for p in args.videos] or None
        n = store.index.requeue_videos(statuses, paths=paths)
    if paths and n < len(paths):
        print(f"{PROG}: warning: {len(paths) - n} of the videos named are not "
              f"{' or '.join(statuses)} in this store", file=sys.stderr)
    emit(args, {"requeued": n}, f"{n} video(s) queued again; `vidmine-mine run` mines them")
    return 0


def cmd_synth(args) -> int:
    from .scenes import SOLIDS_PER_VIDEO
    from .synthetic import generate_dataset
    if args.kind == "solids" and args.pool_size < SOLIDS_PER_VIDEO:
        raise UsageError(f"--pool-size {args.pool_size} is too small: each video shows "
                         f"{SOLIDS_PER_VIDEO} different solids")
    if args.category_look and args.kind != "solids":
        raise UsageError("--category-look needs --kind solids (flat videos have no categories)")
    extra = ({"pool": args.pool, "pool_size": args.pool_size, "category_look": args.category_look}
             if args.kind == "solids" else {})
    paths = generate_dataset(args.out_dir, n_videos=args.videos, seed=args.seed, kind=args.kind,
                             **extra)
    emit(args, {"videos": [str(p) for p in paths]}, "\n".join(map(str, paths)))
    return 0


def cmd_synth_sets(args) -> int:
    from .evalsets import render_sets
    manifest = render_sets(args.out_dir, per_category=args.objects_per_category, seed=args.seed,
                           category_look=args.category_look)
    lines = [f"{kind:>13}: {e['images']} images, {e['sets']} sets, {e['classes']} classes"
             for kind, e in manifest["kinds"].items()]
    r = manifest["retrieval"]
    lines.append(f"{'retrieval':>13}: {r['images']} images of {r['objects']} objects in "
                 f"{r['renders']} renders each")
    emit(args, manifest, "\n".join(lines) + f"\nwritten to {args.out_dir}")
    return 0


CATEGORY_LOOK_HELP = ("solids: every object of a category wears the category's one material "
                      "(own hues per face), so a category looks alike, not only shaped alike")


def build_parser():
    parser, commands = command_parser(PROG, __doc__)
    for name, fn, help_text in (("run", cmd_run, "mine every video under VIDEO_DIR once"),
                                ("daemon", cmd_daemon, "keep watching VIDEO_DIR and mine new files")):
        p = add_command(commands, name, fn, help_text, settings=[MiningConfig])
        p.add_argument("video_dir", metavar="VIDEO_DIR")
        p.add_argument("--sheet", default=None,
                       help="contact sheet PNG of the mined tracks (default: "
                            "<workdir>/reports/mining-tracks.png; 'none' to skip)")
        p.add_argument("--ray-address", default=None, help="Ray cluster address (executor ray)")
    add_command(commands, "status", cmd_status, "videos by status, tracks, crops, failures")
    p = add_command(commands, "retry", cmd_retry,
                    "queue failed videos for mining again (e.g. after fixing a setting)")
    p.add_argument("videos", nargs="*", metavar="VIDEO",
                   help="video files to retry (default: every failed video)")
    p.add_argument("--failed", action="store_true", help="failed videos (the default)")
    p.add_argument("--skipped", action="store_true",
                   help="also skipped ones (duplicates, files that were not regular)")
    p = add_command(commands, "synth", cmd_synth,
                    "write synthetic videos with ground truth (for trying out)", store=False)
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--videos", type=count, default=4)
    p.add_argument("--seed", type=natural, default=0)
    p.add_argument("--kind", choices=("flat", "solids"), default="flat",
                   help="flat: textured ellipses turning in the image plane; solids: 3D objects "
                        "of six categories turning out of plane under a moving light")
    p.add_argument("--pool", choices=("train", "heldout"), default="train",
                   help="solids: the pool of object instances (held-out ones never appear in "
                        "training videos)")
    p.add_argument("--pool-size", type=count, default=300,
                   help="solids: how many distinct instances the videos draw their objects from "
                        "(three per video; more videos of a small pool repeat the same objects)")
    p.add_argument("--category-look", action="store_true", help=CATEGORY_LOOK_HELP)
    p = add_command(commands, "synth-sets", cmd_synth_sets,
                    "render invariance sets of held-out solids (for vidmine-eval)", store=False)
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--objects-per-category", type=count, default=8)
    p.add_argument("--seed", type=natural, default=0)
    p.add_argument("--category-look", action="store_true", help=CATEGORY_LOOK_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
