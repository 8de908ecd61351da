"""How far apart are the two views of a mined positive pair? On rendered videos the ground
truth holds every object's rotation per frame, so each pair on one instance has a *turn*: the
angle of the rotation between its two views. Tracker pairs can teach viewpoint invariance
only as far as they turn; the viewpoint set asks for invariance across its turntable.

    python experiments/pair_views.py vidmine-data/study-cpu-arms-data800-64 \\
        vidmine-data/study-cpu-lk-data800-64 --labels "KCF tracks" "LK tracks" \\
        --out experiments/results/pair-views --chart docs/images/study-cpu-pair-turn.png

Prints (and writes to OUT/results.md and .json), for each study, per positive source: pairs,
tracks, the share on one instance, and the turn's quartiles; tracker pairs for several least
frame gaps (`vidmine-train --min-gap`); and the turns between two views of one object in
the viewpoint set, for comparison.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from vidmine.graph.quality import CropTruth, crop_labels, instance_turns, turn_degrees
from vidmine.mining.evalsets import AZIMUTHS, ELEVATIONS
from vidmine.mining.render import rotation
from vidmine.storage.store import StorageConfig, Store
from vidmine.training.data import CropTable, neighbours_in_time, read_crop_table, read_pairs

MIN_GAPS = (5, 10, 15, 20, 25, 30)
MAX_GAP = 150


def load(work: Path):
    """The ground truth of every object crop, the crop table and the graph's pairs."""
    with Store(StorageConfig(workdir=str(work)), create=False) as store:
        truth = crop_labels(store)
        with store.index.read() as conn:
            table = read_crop_table(conn)
            graph_pairs = {kind: read_pairs(conn, table, kind, "train", None)
                           for kind in ("intra", "transitive")}
    return truth, table, graph_pairs


def source_turns(truth: CropTruth, table: CropTable, graph_pairs: dict) -> dict[str, dict]:
    """Per positive source: its pairs and tracks, the share of pairs on one instance, and
    the turns of those (tracker pairs as vidmine-train draws them, for each least gap)."""
    objects = np.flatnonzero(~table.is_frame & (table.track >= 0))
    sources = {}
    for gap in MIN_GAPS:
        i, j = neighbours_in_time(table.track[objects], table.frame[objects], gap, MAX_GAP)
        sources[f"tracker, {gap}-{MAX_GAP} frames apart"] = (objects[i], objects[j])
    sources.update(graph_pairs)
    out = {}
    for name, (a, b) in sources.items():
        turn, one_instance = instance_turns(truth, table.ids[a], table.ids[b])
        out[name] = {"pairs": int(len(a)), "tracks": int(len(np.unique(table.track[a]))),
                     "one_instance": one_instance, "turn": turn}
    return out


def track_spans(table: CropTable) -> dict:
    """Source frames from the first to the last crop of each track: median, 90th percentile."""
    objects = ~table.is_frame & (table.track >= 0)
    track, frame = table.track[objects], table.frame[objects]
    _, inverse = np.unique(track, return_inverse=True)
    first = np.full(inverse.max() + 1, np.iinfo(np.int64).max)
    last = np.full(inverse.max() + 1, np.iinfo(np.int64).min)
    np.minimum.at(first, inverse, frame)
    np.maximum.at(last, inverse, frame)
    span = last - first
    return {"tracks": int(len(span)), "median": float(np.median(span)),
            "p90": float(np.percentile(span, 90))}


def viewpoint_set_turns() -> np.ndarray:
    """Turn between every two views of one object on the viewpoint set's turntable."""
    views = [rotation([1, 0, 0], math.radians(e)) @ rotation([0, 1, 0], 2 * math.pi * a / AZIMUTHS)
             for e in ELEVATIONS for a in range(AZIMUTHS)]
    i, j = np.triu_indices(len(views), 1)
    stack = np.stack(views)
    return turn_degrees(stack[i], stack[j])


def summary(turn: np.ndarray) -> dict:
    q = np.percentile(turn, [25, 50, 75, 90]) if len(turn) else [math.nan] * 4
    return {"scored": int(len(turn)), "p25": round(float(q[0]), 1), "median": round(float(q[1]), 1),
            "p75": round(float(q[2]), 1), "p90": round(float(q[3]), 1),
            "at_least_45": round(float((turn >= 45).mean()), 3) if len(turn) else math.nan}


def table(results: dict[str, dict]) -> list[str]:
    lines = ["| positives | pairs | tracks | on one instance "
             "| turn p25 / median / p75 / p90 (deg) | turn >= 45 deg |",
             "| --- | ---: | ---: | ---: | --- | ---: |"]
    for name, r in results.items():
        s = r["summary"]
        pairs = f"{r['pairs']:,}" if r.get("pairs") is not None else ""
        tracks = f"{r['tracks']:,}" if r.get("tracks") is not None else ""
        one = f"{r['one_instance']:.3f}" if r.get("one_instance") is not None else ""
        lines.append(f"| {name} | {pairs} | {tracks} | {one} | {s['p25']} / {s['median']} / "
                     f"{s['p75']} / {s['p90']} | {s['at_least_45']:.2f} |")
    return lines


VIEWPOINT_SET = "viewpoint set: two views of one object"
# transitive pairs join other objects: their few same-instance turns say little
CHARTED = ("tracker, 5-150 frames apart", "tracker, 15-150 frames apart", "intra")


def chart(studies: dict[str, dict[str, dict]], path: Path) -> None:
    """Cumulative share of pairs by turn: a colour per positive source, a line style per
    study, the viewpoint set's own turns in black."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.2))

    def draw(turn, **style):
        ax.plot(np.sort(turn), np.linspace(0, 1, len(turn)), **style)

    for (name, results), ls in zip(studies.items(), ("-", "--", "-.", ":")):
        for source, colour in zip(CHARTED, ("C0", "C1", "C3")):
            if len(results[source]["turn"]):
                label = source if len(studies) == 1 else f"{name}: {source}"
                draw(results[source]["turn"], color=colour, ls=ls, label=label)
    draw(viewpoint_set_turns(), color="black", lw=1.2, label=VIEWPOINT_SET)
    step = 360 / AZIMUTHS
    ax.axvline(step, color="grey", lw=0.8, ls=":")
    ax.text(step + 2, 0.02, "one azimuth step of\nthe viewpoint set", fontsize=7, color="grey")
    ax.set(xlabel="turn between the two views (degrees)", ylabel="share of pairs at most",
           xlim=(0, 185), title="How far the views of positive pairs turn")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", type=Path, nargs="+",
                        help="study --out folders (their work/ is read)")
    parser.add_argument("--labels", nargs="+", help="a short name per study (default: folder names)")
    parser.add_argument("--out", type=Path, help="write results.md and results.json here")
    parser.add_argument("--chart", type=Path, help="write a chart of the turns (PNG)")
    args = parser.parse_args(argv)
    labels = args.labels or [study.name for study in args.studies]
    if len(labels) != len(args.studies):
        parser.error(f"{len(labels)} labels for {len(args.studies)} studies")
    studies, spans = {}, {}
    for study, label in zip(args.studies, labels):
        work = study / "work"
        if not (work / "index.sqlite").is_file():
            parser.error(f"no study work directory at {work}")
        truth, crop_table, graph_pairs = load(work)
        results = source_turns(truth, crop_table, graph_pairs)
        if not any(len(r["turn"]) for r in results.values()):
            parser.error(f"no pair in {work} has rendered poses "
                         "(mine `vidmine-mine synth --kind solids` videos)")
        results[VIEWPOINT_SET] = {"turn": viewpoint_set_turns()}
        for r in results.values():
            r["summary"] = summary(r["turn"])
        studies[label] = results
        spans[label] = track_spans(crop_table)
    text = []
    for name, results in studies.items():
        span = spans[name]
        text += [f"## {name}", "", f"{span['tracks']:,} tracks; a track spans {span['median']:.0f} "
                 f"source frames (median; 90th percentile {span['p90']:.0f}).", "", *table(results), ""]
    print("\n".join(text))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        command = "python experiments/pair_views.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        (args.out / "results.md").write_text(
            f"# Turn between the views of positive pairs\n\nCommand: `{command}` (commit {commit})\n\n"
            + "\n".join(text))
        (args.out / "results.json").write_text(json.dumps(
            {"commit": commit, "track_spans": spans, "studies": {
                name: {k: {f: v for f, v in r.items() if f != "turn"} for k, r in results.items()}
                for name, results in studies.items()}}, indent=2))
    if args.chart:
        chart(studies, args.chart)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
