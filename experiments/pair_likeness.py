"""How alike are the two crops of a transitive pair, and how often are they one category?

Mined transitive pairs join crops that the clustering network found alike; the study's
controls replace their positives by crops drawn from the rendered ground truth (another
instance of the anchor's category, or of any category). For each study folder this prints
the share of its transitive pairs on one category and on one instance, and how alike the
pair's two crops are under descriptors that learn nothing (the colour histogram and the
hand-crafted descriptor, cosine similarity) and under the graph's newest embedding (the
network the inter edges were clustered with):

    python experiments/pair_likeness.py vidmine-data/study-cpu-random-transitive \\
        vidmine-data/study-cpu-edge-types vidmine-data/study-cpu-oracle-mix \\
        --labels "at chance" mined "one category" --out experiments/results/pair-likeness \\
        --chart docs/images/study-pair-likeness.png

Writes OUT/results.md and OUT/results.json, and the cumulative distributions to CHART.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from vidmine.arrays import lookup_sorted
from vidmine.descriptors import colour_histogram, handcrafted_descriptor, l2_normalize
from vidmine.graph.embed import load_embeddings
from vidmine.graph.quality import crop_labels
from vidmine.storage.store import StorageConfig, Store
from vidmine.training.data import read_crop_table, read_pairs

DESCRIPTORS = {"colour histogram": lambda ims: l2_normalize(colour_histogram(ims)),
               "hand-crafted": handcrafted_descriptor}
SIMILARITIES = (*DESCRIPTORS, "graph's embedding")


def quartiles(x: np.ndarray) -> list[float]:
    return [round(float(q), 3) for q in np.percentile(x, [25, 50, 75])]


def cosines(vectors: np.ndarray, rows_a: np.ndarray, rows_p: np.ndarray) -> np.ndarray:
    return np.sum(vectors[rows_a] * vectors[rows_p], axis=1)


def likeness(work: Path) -> dict:
    """Category and instance shares, and cosine similarity quartiles, of the transitive pairs
    of one study's store (the pairs whose two crops the ground truth names)."""
    with Store(StorageConfig(workdir=str(work)), create=False) as store:
        truth = crop_labels(store)
        with store.index.read() as conn:
            table = read_crop_table(conn)
            a, p = read_pairs(conn, table, "transitive", "train", None)
        ok = (a >= 0) & (p >= 0)
        ids_a, ids_p = table.ids[a[ok]], table.ids[p[ok]]
        ra, rp = lookup_sorted(truth.ids, ids_a), lookup_sorted(truth.ids, ids_p)
        known = (ra >= 0) & (rp >= 0)
        known[known] = (truth.category[ra[known]] >= 0) & (truth.category[rp[known]] >= 0)
        if not known.any():
            raise SystemExit(f"pair_likeness: no transitive pair in {work} has rendered ground "
                             "truth on both crops (or the videos moved since mining)")
        images = store.load_crops(np.concatenate([ids_a[known], ids_p[known]]), job="pair likeness")
        crops = np.array(sorted(images), np.int64)
        known &= np.isin(ids_a, crops) & np.isin(ids_p, crops)   # unreadable crops are left out
        ids_a, ids_p, ra, rp = ids_a[known], ids_p[known], ra[known], rp[known]
        embedded = load_embeddings(store)
    out = {"pairs": int(len(ids_a)),
           "one_category": float(np.mean(truth.category[ra] == truth.category[rp])),
           "one_instance": float(np.mean(truth.instance[ra] == truth.instance[rp])),
           "values": {}}
    ia, ip = np.searchsorted(crops, ids_a), np.searchsorted(crops, ids_p)
    ordered = [images[int(i)] for i in crops]
    for name, describe in DESCRIPTORS.items():
        out["values"][name] = cosines(describe(ordered), ia, ip)
    if embedded is not None:
        rows_a, rows_p = embedded.rows_of(ids_a), embedded.rows_of(ids_p)
        ok = (rows_a >= 0) & (rows_p >= 0)
        if ok.any():   # rows are L2-normalised
            out["values"]["graph's embedding"] = cosines(embedded.vectors, rows_a[ok], rows_p[ok])
        named = Path(embedded.checkpoint or embedded.model)
        out["embedding"] = f"{named.parent.name}/{named.name}" if embedded.checkpoint else named.name
    out["similarity"] = {name: quartiles(v) for name, v in out["values"].items()}
    return out


def chart(results: dict[str, dict], path: Path) -> None:
    """Per similarity measure, the cumulative share of each pair set's pairs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [n for n in SIMILARITIES if any(n in r["values"] for r in results.values())]
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for label, r in results.items():
            if name in r["values"]:
                v = np.sort(r["values"][name])
                ax.plot(v, np.linspace(0, 1, len(v)), label=label)
        ax.set(xlabel=f"cosine similarity, {name}", title=name)
    axes[0][0].set_ylabel("share of pairs at most")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle("How alike the two crops of a transitive pair are", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="+", type=Path, help="study folders (their --out)")
    parser.add_argument("--labels", nargs="+", help="one name per study (default: folder names)")
    parser.add_argument("--out", type=Path, help="write results.md and results.json here")
    parser.add_argument("--chart", type=Path, help="write the similarities' distributions here (PNG)")
    args = parser.parse_args(argv)
    labels = args.labels or [s.name for s in args.studies]
    if len(labels) != len(args.studies):
        parser.error("give one label per study")
    results = {label: {"study": str(study), **likeness(study / "work")}
               for label, study in zip(labels, args.studies)}
    names = list(SIMILARITIES)
    md = ["Transitive pairs: their share on one category / instance (rendered ground truth), and "
          "the cosine similarity of their two crops (quartiles 25 / 50 / 75 %).", "",
          "| transitive pairs | scored | one category | one instance | " + " | ".join(names) + " |",
          "| --- " * (4 + len(names)) + "|"]
    for label, r in results.items():
        md.append(f"| {label} | {r['pairs']:,} | {100 * r['one_category']:.1f} % | "
                  f"{100 * r['one_instance']:.1f} % | " + " | ".join(
                      " / ".join(f"{q:.2f}" for q in r["similarity"][n]) if n in r["similarity"]
                      else "-" for n in names) + " |")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent).stdout.strip()
    command = "python experiments/pair_likeness.py " + shlex.join(argv or sys.argv[1:])
    md += ["", f"Embedding: {', '.join(sorted({r.get('embedding', '-') for r in results.values()}))}.",
           f"Command: `{command}` (commit {commit})"]
    print("\n".join(md))
    if args.chart:
        chart(results, args.chart)
    for r in results.values():
        del r["values"]
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text("\n".join(md) + "\n")
        (args.out / "results.json").write_text(json.dumps(
            {"command": command, "commit": commit, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
