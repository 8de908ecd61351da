"""Reports that compare checkpoints: a terminal table, one JSON file, PNG bar charts."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def table(rows: list[dict], columns: list[str], title: str) -> str:
    """A fixed-width table of ``rows`` (dicts) for the terminal."""
    cells = [[str(r.get(c, "")) if not isinstance(r.get(c), float) else f"{r[c]:.2f}"
              for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [title, line, "-" * len(line)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def bar_colours(n: int) -> list[tuple[float, float, float]]:
    """``n`` colours, no two alike up to 20: matplotlib's default ten (tab10) while they do,
    tab20 beyond (the default cycle repeats from the eleventh bar, so a floor drawn eleventh
    looked like the first network)."""
    palette = plt.get_cmap("tab10" if n <= 10 else "tab20").colors
    return [palette[i % len(palette)] for i in range(n)]


def bar_chart(results: dict[str, dict[str, float]], title: str, ylabel: str, out_png: Path,
              errors: dict[str, dict[str, float]] | None = None,
              intervals: dict[str, dict[str, tuple[float, float]]] | None = None) -> Path:
    """Grouped bars: one group per measure (e.g. invariance), one bar per model; ``errors``
    (same keys) draws symmetric error bars, e.g. the sd over seeds; ``intervals`` draws
    whiskers from low to high around a bar (e.g. a 95 % interval), where given."""
    measures = list(results)
    models = list(next(iter(results.values())))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(measures) * len(models) ** 0.5), 4))
    width = 0.8 / len(models)
    colours = bar_colours(len(models))
    for m, model in enumerate(models):
        xs = [i + m * width for i in range(len(measures))]
        values = [results[k].get(model, 0.0) for k in measures]
        err = [errors[k].get(model, 0.0) for k in measures] if errors else None
        ax.bar(xs, values, width, label=model, yerr=err, capsize=2 if err else 0,
               color=colours[m])
        for x, v, k in zip(xs, values, measures):
            if model in (intervals or {}).get(k, {}):
                lo, hi = intervals[k][model]
                ax.errorbar([x], [v], yerr=[[v - lo], [hi - v]], fmt="none", ecolor="black",
                            capsize=2, linewidth=1)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(measures))])
    ax.set_xticklabels(measures, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    # beside the axes: inside, it covers the first group's bars once there are many models
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out_png


def write_json(obj: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str))
    return path
