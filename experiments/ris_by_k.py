"""Top-K RIS as K grows: networks (mean ± sd over seeds) beside the floors that learn nothing.

    vidmine-eval ris --sets rendered:SETS --k 1,2,5,10,25,50,100 --checkpoint RUN-s0/final.pt \\
        --checkpoint RUN-s1/final.pt ... --out EVAL --json
    python experiments/ris_by_k.py [LABEL=]EVAL/report.json [...] [--invariance viewpoint]
                                   [--out PNG]

K is how many of a class's most invariant units RIS averages (docs/design.md, step 4). A
descriptor with a few object-specific bins, like the colour histogram, scores at small K;
invariance spread over many units scores at larger K. The paper reports K = 10 and 25; this
shows every K the reports hold, so that a claim at one K is read against the others.

Checkpoints named ``<arm>-s<seed>/final`` are one arm over seeds. ``LABEL=`` names the arms
of one report (e.g. the image size it was evaluated at); the floors, which learn nothing and
do not depend on the network's image size, are taken from the first report.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from curve import FLOOR_MARK, UNTRAINED, mean_sd  # noqa: E402  (experiments/ is not a package)

SEED_RUN = re.compile(r"-s\d+/(final|last)$")


def load(specs: list[str], invariance: str) -> tuple[list[int], dict[str, dict[int, list[float]]]]:
    """The Ks the reports hold, and per model (arms pooled over seeds): K -> values."""
    models: dict[str, dict[int, list[float]]] = {}
    ks: list[int] | None = None
    for n, spec in enumerate(specs):
        label, _, path = spec.rpartition("=")
        report = json.loads(Path(path).read_text())
        rows = [r for r in report["results"] if r["invariance"].startswith(invariance)]
        if not rows:
            raise SystemExit(f"{path}: no {invariance!r} rows (invariances: "
                             f"{', '.join(sorted({r['invariance'] for r in report['results']}))})")
        found = sorted(int(k[3:]) for k in rows[0] if re.fullmatch(r"top\d+", k))
        if ks is not None and found != ks:
            raise SystemExit(f"{path}: K {found} differs from the first report's {ks}")
        ks = found
        for r in rows:
            floor = FLOOR_MARK in r["model"]
            if floor and n > 0:
                continue
            name = SEED_RUN.sub("", r["model"])
            name = f"{name} ({label})" if label and not floor else name
            for k in ks:
                models.setdefault(name, {}).setdefault(k, []).append(r[f"top{k}"])
    return ks or [], models


def table(ks: list[int], models: dict, invariance: str) -> str:
    lines = [f"| {invariance}: Top-K RIS | " + " | ".join(f"K={k}" for k in ks) + " |",
             "| --- " + "| ---: " * len(ks) + "|"]
    for name, by_k in models.items():
        seeds = len(next(iter(by_k.values())))
        label = f"*{name}*" if FLOOR_MARK in name else f"{name} ({seeds} seeds)" \
            if seeds > 1 else name
        lines.append(f"| {label} | " + " | ".join(mean_sd(by_k[k]) for k in ks) + " |")
    return "\n".join(lines)


def plot(ks: list[int], models: dict, invariance: str, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    for name, by_k in models.items():
        means = [statistics.mean(by_k[k]) for k in ks]
        floor = FLOOR_MARK in name or name.startswith(UNTRAINED)
        line = ax.plot(ks, means, "--" if floor else "-o", linewidth=1 if floor else 1.8,
                       markersize=3, label=name)[0]
        if len(by_k[ks[0]]) > 1:
            sds = [statistics.stdev(by_k[k]) for k in ks]
            ax.fill_between(ks, [m - s for m, s in zip(means, sds)],
                            [m + s for m, s in zip(means, sds)], color=line.get_color(), alpha=0.2)
    for k in (10, 25):   # the paper's two
        ax.axvline(k, color="k", linewidth=0.6, alpha=0.4)
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("K: most invariant units averaged per class")
    ax.set_ylabel("Top-K RIS")
    ax.set_title(f"{invariance}: Top-K RIS by K (bands: ± sd over seeds)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+", help="[LABEL=]report.json of vidmine-eval ris")
    parser.add_argument("--invariance", default="viewpoint",
                        help="which rows: the start of their invariance label")
    parser.add_argument("--out", type=Path, help="where to write the chart (PNG)")
    args = parser.parse_args()
    ks, models = load(args.reports, args.invariance)
    print(table(ks, models, args.invariance))
    if args.out:
        plot(ks, models, args.invariance, args.out)
        print(f"chart: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
