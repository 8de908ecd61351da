"""vidmine-train: train a backbone on mined pairs, and list the positives there are to train on.

    vidmine-train --workdir W --objective triplet --positives intra --backbone vgg16
    vidmine-train --workdir W --objective moco --positives transitive:1,intra:0.5 --steps 20000
    vidmine-train --workdir W --objective moco --resume          # continue <out>/last.pt
    torchrun --nproc_per_node 8 -m vidmine.training.cli --workdir W ...   # one process per GPU
    vidmine-train sources --workdir W --json                      # pairs per positive source

``train`` is the default command. The final checkpoint (<out>/final.pt) is a
training.backbones checkpoint: ``vidmine-graph embed`` and ``vidmine-eval`` take it as is.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidmine.storage.cliutil import add_common_args, open_from_args, print_json, run_main
from vidmine.storage.config import add_config_args, build_config, load_toml

from .config import SOURCES, TrainConfig

PROG = "vidmine-train"
COMMANDS = ("train", "sources")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a backbone (the default command)")
    add_common_args(train)
    train.add_argument("--out", default=None,
                       help="checkpoint and log directory (default <workdir>/training/"
                            "<objective>-<backbone>)")
    train.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    train.add_argument("--until", type=int, default=None, metavar="STEP",
                       help="stop at this step of the schedule (continue later with --resume)")
    train.add_argument("--json", action="store_true",
                       help="no progress bar; print the summary as one JSON object")
    add_config_args(train, TrainConfig)
    sources = sub.add_parser("sources", help="how many pairs each positive source offers")
    add_common_args(sources)
    sources.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_args(sources, TrainConfig)
    return parser


def _config(args) -> TrainConfig:
    return build_config(TrainConfig, args, load_toml(args.config), "training")


def _train(args) -> int:
    cfg = _config(args)
    store = open_from_args(args, create=False)
    out = Path(args.out) if args.out else store.root / "training" / f"{cfg.objective}-{cfg.backbone}"
    from .trainer import Trainer  # torch-heavy: imported once the arguments are known good
    trainer = Trainer(cfg, store, out, resume=args.resume)
    summary = trainer.fit(progress=not args.json, until=args.until)
    if trainer.rank != 0:
        return 0
    if args.json:
        print_json(summary)
    elif summary["status"] != "interrupted":
        print(f"trained to step {summary['step']} of {summary['steps']} at "
              f"{summary['pairs_per_s']:.0f} pairs/s; checkpoint {summary['checkpoint']}")
    if summary["status"] == "interrupted":
        print(f"{PROG}: stopped by SIGTERM at step {summary['step']}; checkpoint "
              f"{summary['checkpoint']} (continue with --resume)", file=sys.stderr)
        return 143
    return 0


def _sources(args) -> int:
    import numpy as np

    from .data import read_crop_table, source_pairs
    cfg = _config(args)
    store = open_from_args(args, create=False)
    with store.index.read() as conn:
        table = read_crop_table(conn)
        counts = {name: len(source_pairs(conn, table, name, cfg)[0]) for name in SOURCES}
        clustered = int(np.count_nonzero(table.cluster >= 0))
    report = {"pairs": counts, "split": cfg.split, "crops": len(table),
              "clustered_crops": clustered}
    if args.json:
        print_json(report)
    else:
        for name, n in counts.items():
            print(f"{name:>10}  {n}")
        print(f"{len(table)} crops, {clustered} with a cluster (split {cfg.split!r})")
    return 0


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv.insert(0, "train")
    args = build_parser().parse_args(argv)
    return _train(args) if args.command == "train" else _sources(args)


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
