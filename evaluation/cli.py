"""vidmine-eval: compare checkpoints (and an untrained network as the floor).

    vidmine-eval ris --checkpoint a.pt --checkpoint b.pt [--sets store] [--k 10,25]
    vidmine-eval retrieval --checkpoint a.pt
    vidmine-eval probe --checkpoint a.pt --data IMAGE_FOLDER
"""
from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vidmine.cli import add_command, command_parser, open_store, print_json, run_main, settings
from vidmine.config import to_dict, validate
from vidmine.descriptors import FLOORS
from vidmine.errors import UsageError
from vidmine.images import load_rgb
from vidmine.text import safe_name, safe_text
from vidmine.training.backbones import (
    BACKBONES,
    load_backbone,
)
from vidmine.training.features import embed_images

from . import compare, report, sets
from . import probe as probes
from .retrieval import per_label_ap, retrieval_metrics
from .ris import MIN_SET_SIZE, ris_per_class, scorable


@dataclass
class EvalConfig:
    backbone: str = field(default="resnet18", metadata={"choices": tuple(BACKBONES),
        "help": "backbone of plain state dicts and of the untrained floor"})
    size: int | None = field(default=None, metadata={"min": 16,
        "help": "input side in pixels (default auto: the size the checkpoints were trained "
                "at; 112 when none says)"})
    batch_size: int = field(default=64, metadata={"above": 0, "help": "images per forward pass"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    k: list[int] = field(default_factory=lambda: [10, 25], metadata={"above": 0, "help": "Top-K of RIS"})
    max_tracks: int = field(default=300, metadata={"above": 0, "help": "held-out tracks used"})
    variants: int = field(default=8, metadata={"above": 0, "help": "synthetic variants per crop"})
    knn_k: int = field(default=20, metadata={"above": 0, "help": "neighbours of the kNN probe"})
    untrained: bool = field(default=True, metadata={"help": "add an untrained network as a floor"})
    floors: list[str] = field(default_factory=lambda: list(FLOORS), metadata={"choices": tuple(FLOORS),
        "help": "descriptors that learn nothing, reported beside the networks: "
                + ", ".join(FLOORS) + " (comma-separated; '' for none)"})
    seed: int = field(default=0, metadata={"help": "seed of set sampling and the floor's init"})

    def __post_init__(self):
        validate(self)


Extractor = Callable[[list[np.ndarray]], np.ndarray]


TRAINER_CHECKPOINTS = ("final", "last")   # vidmine-train's file names, without .pt
UNKNOWN_SIZE_DEFAULT = 112


def input_size(cfg: EvalConfig, trained_sizes: list[int | None]) -> int:
    """``cfg.size``, else the one size the checkpoints were trained at (``trained_sizes``,
    None where one does not say): a network measured at another size than it learned meets
    objects of a scale it never saw."""
    if cfg.size:
        return cfg.size
    trained = set(trained_sizes) - {None}
    if len(trained) > 1:
        raise UsageError(f"the checkpoints were trained at {sorted(trained)} px: choose the "
                         "input size of all with --size")
    return trained.pop() if trained else UNKNOWN_SIZE_DEFAULT


def _models(args, cfg: EvalConfig) -> tuple[dict[str, Extractor], EvalConfig]:
    """Name -> features of a list of RGB images: every checkpoint, then the floors that
    learn nothing (an untrained network, the descriptors of ``cfg.floors``); and ``cfg``
    with its input size resolved (:func:`input_size`). Each checkpoint is read once."""
    trunks, trained_sizes = {}, []
    paths = [Path(p) for p in args.checkpoint or []]
    stems = [p.stem for p in paths]
    for path in paths:
        # The trainer calls every run's checkpoints final.pt and last.pt, and runs are often
        # compared side by side: name those, and any name given twice, by their run folder.
        named_by_run = path.stem in TRAINER_CHECKPOINTS or stems.count(path.stem) > 1
        name = f"{path.parent.name}/{path.stem}" if named_by_run else path.stem
        trunks[name] = load_backbone(path, cfg.backbone)
        trained_sizes.append(trunks[name].trained_image_size)
    cfg = dataclasses.replace(cfg, size=input_size(cfg, trained_sizes))
    if cfg.untrained:
        torch.manual_seed(cfg.seed)
        trunks[f"untrained {cfg.backbone}"] = load_backbone(None, cfg.backbone)

    def network(trunk) -> Extractor:
        return lambda images: embed_images(trunk, images, cfg.size, cfg.batch_size, cfg.device,
                                           progress=not args.json)
    models: dict[str, Extractor] = {name: network(trunk) for name, trunk in trunks.items()}
    for floor in cfg.floors:   # names checked by EvalConfig's choices
        models[f"{floor} (floor)"] = FLOORS[floor]
    if not models:
        raise UsageError("nothing to evaluate: give --checkpoint or keep the floors")
    return models, cfg


def _invariance_sets(args, cfg: EvalConfig) -> list[sets.InvarianceSets]:
    out = []
    for spec in args.sets:
        kind, _, path = spec.partition(":")
        if kind == "rendered":
            out += sets.rendered(path)
        elif kind == "store":
            with open_store(args) as store:
                out += sets.store_sets(store, max_tracks=cfg.max_tracks, variants=cfg.variants,
                                       seed=cfg.seed)
        elif kind == "folder":
            out.append(sets.from_folder(path))
        elif kind.startswith("aloi-"):
            out.append(sets.aloi(path, kind.removeprefix("aloi-")))
        elif kind == "got10k":
            out.append(sets.got10k(path))
        elif kind in ("pascal3d-instance", "pascal3d-instance+viewpoint"):
            out.append(sets.pascal3d(path, kind.removeprefix("pascal3d-")))
        else:
            raise UsageError(f"unknown --sets {spec!r}: rendered:DIR, store, folder:DIR, aloi-viewpoint:DIR, "
                             "aloi-illumination-direction:DIR, aloi-illumination-colour:DIR, "
                             "got10k:DIR, pascal3d-instance:DIR, pascal3d-instance+viewpoint:DIR")
    return out


def _out_dir(args) -> Path:
    out = Path(args.out) if args.out else Path(args.workdir or "./vidmine-data") / "reports" \
        / f"eval-{args.command}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write the report to {out}: {exc.strerror} (choose --out DIR)") \
            from exc
    return out


def _print_report(table: str, out: Path, charts: list) -> None:
    print(safe_text(f"{table}\n\nreport: {out / 'report.json'}\n"
                    f"charts: {', '.join(map(str, charts))}"))


WHISKERS = "\nwhiskers: 95 % interval of the difference to the untrained network"


def cmd_ris(args, cfg: EvalConfig) -> dict:
    models, cfg = _models(args, cfg)
    reference = _reference(models)
    rows, charts = [], {f"top{k}": {} for k in cfg.k}
    whiskers = {f"top{k}": {} for k in cfg.k}
    for inv in _invariance_sets(args, cfg):
        if not scorable(inv.set_ids):
            print(f"vidmine-eval: skipped {safe_name(inv.label)}: RIS needs a set of "
                  f"{MIN_SET_SIZE} or more images", file=sys.stderr)
            continue
        images = [load_rgb(im) for im in inv.images]
        per_class, set_rows = {k: {} for k in cfg.k}, {}
        for name, features in models.items():
            feats = features(images)
            row = set_rows[name] = {"invariance": inv.label, "model": name,
                                    "images": len(inv.images),
                                    "sets": int(len(np.unique(inv.set_ids)))}
            for k in cfg.k:
                per_class[k][name] = ris_per_class(feats, inv.set_ids, inv.class_ids, k)
                row[f"top{k}"] = float(per_class[k][name].mean())
                charts[f"top{k}"].setdefault(inv.label, {})[name] = row[f"top{k}"]
            rows.append(row)
        for k in cfg.k:  # the classes (objects) of this set resampled: compare.py
            for name, interval in compare.against(per_class[k], reference).items():
                set_rows[name][f"top{k}_vs_untrained"] = interval
                whiskers[f"top{k}"].setdefault(inv.label, {})[name] = _around_reference(
                    charts[f"top{k}"][inv.label][reference], interval)
    out = _out_dir(args)
    pngs = [str(report.bar_chart(c, f"Top-{k[3:]} RIS (higher = more invariant)"
                                 + (WHISKERS if reference else ""),
                                 "RIS", out / f"ris_{k}.png", intervals=whiskers[k]))
            for k, c in charts.items()]
    result = {"command": "ris", "results": rows, "charts": pngs, "config": to_dict(cfg)}
    report.write_json(result, out / "report.json")
    if not args.json:
        shown, vs = _with_intervals(rows, f"top{cfg.k[0]}", digits=1)
        _print_report(report.table(shown, ["invariance", "model", "images", "sets"] +
                                   [f"top{k}" for k in cfg.k] + vs,
                                   "Top-K Representation Invariance Score"), out, pngs)
    return result


def _around_reference(reference_value: float, interval: list[float]) -> tuple[float, float]:
    """A difference's interval drawn on the compared bar: the reference's value plus it."""
    return reference_value + interval[1], reference_value + interval[2]


def _reference(models: dict) -> str | None:
    """The untrained network, which every other row is compared with, when it is there."""
    return next((name for name in models if name.startswith("untrained ")), None)


def _with_intervals(rows: list[dict], measure: str, digits: int) -> tuple[list[dict], list[str]]:
    """Rows with a column "<measure> vs untrained": the difference and its 95 % interval."""
    column = f"{measure} vs untrained"
    key = f"{measure}_vs_untrained"
    if not any(key in r for r in rows):
        return rows, []
    return [{**r, column: compare.format_interval(*r[key], digits=digits)} if key in r else r
            for r in rows], [column]


def _retrieval_data(args, cfg: EvalConfig):
    """(images, labels, groups, title): rendered objects when --data is given (relevant: the
    same object in another render; its own render left out), else held-out tracks."""
    if args.data:
        paths, labels, groups = sets.rendered_retrieval(args.data)
        title = f"Object retrieval across renders ({len(np.unique(labels))} held-out objects)"
        return [load_rgb(p) for p in paths], labels, groups, title
    with open_store(args) as store:
        tracks = sets.held_out_tracks(store, max_tracks=cfg.max_tracks, seed=cfg.seed)
        if len(tracks) < 2:
            raise UsageError("need at least 2 held-out tracks with 3+ crops: mine more videos")
        ids = np.concatenate(list(tracks.values()))
        by_id = store.load_crops(ids, job="vidmine-eval")
    labels = np.concatenate([[t] * len(v) for t, v in tracks.items()])
    readable = np.array([int(i) in by_id for i in ids], bool)
    return [by_id[int(i)] for i in ids[readable]], labels[readable], None, \
        f"Instance retrieval on {len(tracks)} held-out tracks"


def cmd_retrieval(args, cfg: EvalConfig) -> dict:
    models, cfg = _models(args, cfg)
    images, labels, groups, title = _retrieval_data(args, cfg)
    reference = _reference(models)
    rows, per_label = [], {}
    for name, features in models.items():
        metrics = retrieval_metrics(features(images), labels, groups=groups, per_query=True)
        per_label[name], queries = per_label_ap(metrics.pop("ap"), metrics.pop("ap_labels"))
        rows.append({"model": name, **metrics})
    # objects (or tracks) resampled, each weighted by its queries, as the mAP weighs them
    intervals = compare.against(per_label, reference, weights=queries) if rows else {}
    for row in rows:
        if row["model"] in intervals:
            row["mAP_vs_untrained"] = intervals[row["model"]]
    out = _out_dir(args)
    chart = {m: {r["model"]: r[m] for r in rows} for m in ("recall@1", "recall@5", "mAP")}
    whiskers = {"mAP": {name: _around_reference(chart["mAP"][reference], interval)
                        for name, interval in intervals.items()}} if intervals else None
    png = report.bar_chart(chart, title + (WHISKERS + " (mAP)" if whiskers else ""), "score",
                           out / "retrieval.png", intervals=whiskers)
    result = {"command": "retrieval", "title": title,
              "objects" if args.data else "tracks": len(np.unique(labels)), "results": rows,
              "charts": [str(png)], "config": to_dict(cfg)}
    report.write_json(result, out / "report.json")
    if not args.json:
        shown, vs = _with_intervals(rows, "mAP", digits=2)
        _print_report(report.table(shown, ["model", "queries", "recall@1", "recall@5", "mAP"] + vs,
                                   title), out, [png])
    return result


def cmd_probe(args, cfg: EvalConfig) -> dict:
    data = probes.load_splits(args.data)
    models, cfg = _models(args, cfg)
    rows = []
    for name, trunk in models.items():
        tr = trunk([load_rgb(p) for p in data["train"][0]])
        va = trunk([load_rgb(p) for p in data["val"][0]])
        rows.append({"model": name,
                     "knn": probes.knn_accuracy(tr, data["train"][1], va, data["val"][1], cfg.knn_k),
                     "linear": probes.linear_probe_accuracy(tr, data["train"][1], va,
                                                            data["val"][1], seed=cfg.seed)})
    out = _out_dir(args)
    chart = {m: {r["model"]: r[m] for r in rows} for m in ("knn", "linear")}
    png = report.bar_chart(chart, f"Probes on {Path(args.data).name}", "accuracy", out / "probe.png")
    result = {"command": "probe", "classes": data["classes"], "train": len(data["train"][0]),
              "val": len(data["val"][0]), "results": rows, "charts": [str(png)],
              "config": to_dict(cfg)}
    report.write_json(result, out / "report.json")
    if not args.json:
        _print_report(report.table(rows, ["model", "knn", "linear"],
                                   f"Probes: {len(data['classes'])} classes, "
                                   f"{len(data['train'][0])} train / {len(data['val'][0])} val "
                                   "images"), out, [png])
    return result


def _command(fn):
    """A command of this CLI: settings from flags and TOML, set errors as one line, --json."""
    def run(args) -> int:
        cfg = settings(args, EvalConfig, "evaluation")
        try:
            result = fn(args, cfg)
        except ValueError as exc:  # sets and probes name what is wrong with the data
            raise UsageError(str(exc)) from exc
        if args.json:
            print_json(result)
        return 0
    return run


def build_parser():
    parser, commands = command_parser("vidmine-eval", __doc__)
    for name, fn, help_text in [("ris", cmd_ris, "Top-K representation invariance scores"),
                                ("retrieval", cmd_retrieval, "instance retrieval on held-out tracks"),
                                ("probe", cmd_probe, "linear and kNN probes on an image folder")]:
        p = add_command(commands, name, _command(fn), help_text, settings=[EvalConfig])
        p.add_argument("--checkpoint", action="append",
                       help="a vidmine or torchvision checkpoint (repeatable)")
        p.add_argument("--out", help="report directory (default <workdir>/reports/eval-...)")
        if name == "ris":
            p.add_argument("--sets", nargs="+", default=["store"],
                           help="store | folder:DIR | aloi-viewpoint:DIR | got10k:DIR | ...")
        if name == "probe":
            p.add_argument("--data", required=True, help="ImageFolder (train/ and val/, or classes)")
        if name == "retrieval":
            p.add_argument("--data", default=None, metavar="DIR",
                           help="sets rendered by `vidmine-mine synth-sets` (default: held-out "
                                "tracks of the store)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main("vidmine-eval", build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
