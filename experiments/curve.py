"""One arm's score against its training steps or videos, across study runs, floors beside.

    python experiments/curve.py RUN_DIR [RUN_DIR ...] --arm ARM [--x steps|videos]
                                [--metric M] [--out PNG]

Each RUN_DIR holds a study's results.json (experiments/study.py); the runs differ in
``--steps`` or ``--synth-train``. Prints a markdown table (videos, steps, mean ± sd over
seeds, each seed; the floors) and draws the curve: every seed as a dot, the mean as a line,
each floor that learns nothing as a horizontal line, so that how far the arm is from them,
and how fast it closes in, is seen at a glance.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study import cell as mean_sd  # noqa: E402  (experiments/ is not a package)

FLOOR_MARK = "(floor)"
UNTRAINED = "untrained"


def load_points(run_dirs: list[Path], arm: str, metric: str) -> tuple[list[dict], dict]:
    """Per run: its steps, training videos and the arm's per-seed values; the floors (and the
    untrained network) from the first run that has them."""
    points, floors = [], {}
    for run in run_dirs:
        results = json.loads((run / "results.json").read_text())
        summary = results["summary"]
        if arm not in summary or metric not in summary[arm]:
            raise SystemExit(f"{run}: no {metric!r} for arm {arm!r} "
                             f"(arms: {', '.join(sorted(summary))})")
        points.append({"run": run.name, "steps": int(results["preset"]["steps"]),
                       "videos": int(results["preset"]["synth_train"]),
                       "values": summary[arm][metric]["values"]})
        for model, scores in summary.items():
            if (FLOOR_MARK in model or model.startswith(UNTRAINED)) and metric in scores:
                floors.setdefault(model, scores[metric]["values"])
    return sorted(points, key=lambda p: (p["videos"], p["steps"])), floors


def table(points: list[dict], floors: dict, arm: str, metric: str) -> str:
    lines = [f"| {arm}: {metric} | videos | steps | mean ± sd | seeds | run |",
             "| --- | ---: | ---: | --- | --- | --- |"]
    for p in points:
        seeds = ", ".join(f"{v:.1f}" for v in p["values"])
        lines.append(f"| | {p['videos']} | {p['steps']} | {mean_sd(p['values'])} | {seeds} "
                     f"| {p['run']} |")
    for model, values in sorted(floors.items(), key=lambda kv: -statistics.mean(kv[1])):
        lines.append(f"| *{model}* | | | {mean_sd(values)} | | |")
    return "\n".join(lines)


AXES = {"steps": "training steps (64 pairs each)", "videos": "training videos mined"}


def plot(points: list[dict], floors: dict, arm: str, metric: str, out: Path,
         x: str = "steps") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    xs = [p[x] for p in points]
    for p in points:
        ax.scatter([p[x]] * len(p["values"]), p["values"], color="tab:blue", s=14, alpha=0.6)
    ax.plot(xs, [statistics.mean(p["values"]) for p in points], "-o", color="tab:blue",
            label=f"{arm} (mean; dots: seeds)")
    colours = iter(["tab:red", "tab:orange", "tab:green", "tab:gray", "tab:purple"])
    for model, values in sorted(floors.items(), key=lambda kv: -statistics.mean(kv[1])):
        ax.axhline(statistics.mean(values), linestyle="--", linewidth=1, color=next(colours, "k"),
                   label=f"{model}: {statistics.mean(values):.1f}")
    ax.set_xscale("log")
    ax.set_xticks(xs, [str(v) for v in xs])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel(AXES[x])
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="study output folders (results.json)")
    parser.add_argument("--arm", required=True)
    parser.add_argument("--x", choices=sorted(AXES), default="steps",
                        help="what the runs differ in: the chart's horizontal axis")
    parser.add_argument("--metric", default="viewpoint (rendered) top10")
    parser.add_argument("--out", type=Path, help="where to write the chart (PNG)")
    args = parser.parse_args()
    points, floors = load_points(args.runs, args.arm, args.metric)
    print(table(points, floors, args.arm, args.metric))
    if args.out:
        plot(points, floors, args.arm, args.metric, args.out, args.x)
        print(f"chart: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
