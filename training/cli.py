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

import sys
from pathlib import Path

from vidmine.cli import (
    add_command,
    command_parser,
    count,
    emit,
    open_store,
    print_json,
    run_main,
    settings,
)
from vidmine.text import safe_text

from .config import SOURCES, TrainConfig

PROG = "vidmine-train"


def _config(args) -> TrainConfig:
    return settings(args, TrainConfig, "training")


def cmd_train(args) -> int:
    cfg = _config(args)
    from .trainer import Trainer  # torch-heavy: imported once the arguments are known good
    with open_store(args) as store:
        out = Path(args.out) if args.out else \
            store.root / "training" / f"{cfg.objective}-{cfg.backbone}"
        trainer = Trainer(cfg, store, out, resume=args.resume)
        summary = trainer.fit(progress=not args.json, until=args.until)
    if trainer.rank != 0:
        return 0
    if args.json:
        print_json(summary)
    elif summary["status"] != "interrupted":
        print(safe_text(f"trained to step {summary['step']} of {summary['steps']} at "
                        f"{summary['pairs_per_s']:.0f} pairs/s; checkpoint {summary['checkpoint']}"))
    if summary["status"] == "interrupted":
        print(safe_text(f"{PROG}: stopped by SIGTERM at step {summary['step']}; checkpoint "
                        f"{summary['checkpoint']} (continue with --resume)"), file=sys.stderr)
        return 143
    return 0


def cmd_sources(args) -> int:
    import numpy as np

    from .data import read_crop_table, source_pairs
    cfg = _config(args)
    with open_store(args) as store, store.index.read() as conn:
        table = read_crop_table(conn)
        counts = {name: len(source_pairs(conn, table, name, cfg)[0]) for name in SOURCES}
        clustered = int(np.count_nonzero(table.cluster >= 0))
    report = {"pairs": counts, "split": cfg.split, "crops": len(table),
              "clustered_crops": clustered}
    lines = [f"{name:>10}  {n}" for name, n in counts.items()]
    lines.append(f"{len(table)} crops, {clustered} with a cluster (split {cfg.split!r})")
    emit(args, report, "\n".join(lines))
    return 0


def build_parser():
    parser, commands = command_parser(PROG, __doc__)
    p = add_command(commands, "train", cmd_train, "train a backbone (the default command)",
                    settings=[TrainConfig])
    p.add_argument("--out", default=None,
                   help="checkpoint and log directory (default <workdir>/training/"
                        "<objective>-<backbone>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--until", type=count, default=None, metavar="STEP",
                   help="stop at this step of the schedule (continue later with --resume)")
    add_command(commands, "sources", cmd_sources, "how many pairs each positive source offers",
                settings=[TrainConfig])
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser, argv, default_command="train")


if __name__ == "__main__":
    sys.exit(main())
