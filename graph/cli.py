"""``vidmine-graph``: build the invariance graph and look at it.

    vidmine-graph embed [--all]             one vector per crop (hand-crafted or a checkpoint)
    vidmine-graph build [--rebuild]         clusters, edges and pairs for crops new since the last build
    vidmine-graph stats                     nodes, edges, pairs, clusters, components, degrees
    vidmine-graph show NODE [--png [PATH]]  a crop's neighbourhood
    vidmine-graph explain PAIR              the chain of edges behind a pair (id, or 'A,B')
    vidmine-graph sheet tracks|clusters|pairs   a PNG contact sheet
    vidmine-graph export --html DIR         a static, offline HTML gallery

Every command takes ``--json`` and then prints one JSON object and nothing else.
``vidmine-store verify`` checks the graph's invariants with the rest of the store.
"""
from __future__ import annotations

import sys
from pathlib import Path

from vidmine.cli import (
    add_command,
    command_parser,
    count,
    emit,
    format_lines,
    natural,
    open_store,
    row_id,
    run_main,
    settings,
)
from vidmine.sheets import contact_sheet

from .build import build
from .config import GraphConfig
from .embed import embed
from .export import SHEET_KINDS, export_html, sheet
from .inspect import explain, format_explain, format_show, show, stats
from .pairs import PAIR_KINDS

PROG = "vidmine-graph"


def _graph_config(args) -> GraphConfig:
    return settings(args, GraphConfig, "graph")


def cmd_embed(args) -> int:
    cfg = _graph_config(args)
    with open_store(args) as store:
        summary = embed(store, cfg, everything=args.all, progress=not args.json)
    emit(args, summary, format_lines(summary))
    return 0


def cmd_build(args) -> int:
    cfg = _graph_config(args)
    with open_store(args) as store:
        summary = build(store, cfg, rebuild=args.rebuild, progress=not args.json)
    emit(args, summary, format_lines(summary))
    return 0


def cmd_stats(args) -> int:
    with open_store(args) as store:
        report = stats(store)
    emit(args, report, format_lines(report))
    return 0


def _show_png(store, report: dict, out: Path) -> Path:
    node = report["node"]["crop"]
    intra = [e["dst"] if e["src"] == node else e["src"] for e in report["edges"]
             if e["kind"] == "intra" and node in (e["src"], e["dst"])]
    inter = [e["dst"] if e["src"] == node else e["src"] for e in report["edges"]
             if e["kind"] == "inter" and node in (e["src"], e["dst"])]
    farther = [n["crop"] for n in report["nodes"] if n["hops"] > 1]
    rows = [[node] + intra]
    labels = [f"crop {node} + intra"]
    for name, members in (("inter", inter), ("farther", farther)):
        if members:
            rows.append(members[:12])
            labels.append(name)
    return contact_sheet(store, rows, out, labels)


def cmd_show(args) -> int:
    with open_store(args) as store:
        report = show(store, args.node, args.radius)
        if args.png is not None:
            out = Path(args.png) if args.png else store.subdir("reports") / f"show-{args.node}.png"
            report["png"] = str(_show_png(store, report, out))
    text = format_show(report) + (f"\nsheet: {report['png']}" if "png" in report else "")
    emit(args, report, text)
    return 0


def cmd_explain(args) -> int:
    with open_store(args) as store:
        report = explain(store, args.pair)
    emit(args, report, format_explain(report))
    return 0


def cmd_sheet(args) -> int:
    with open_store(args) as store:
        out = Path(args.out) if args.out else store.subdir("reports") / f"graph-{args.what}.png"
        report = sheet(store, args.what, out, ids=args.ids, n=args.n, kind=args.kind,
                       per_row=args.per_row, seed=args.seed)
    emit(args, report, f"wrote {report['path']} ({report['rows']} rows)")
    return 0


def cmd_export(args) -> int:
    with open_store(args) as store:
        report = export_html(store, Path(args.html), n_clusters=args.clusters,
                             n_pairs=args.pairs, seed=args.seed)
    emit(args, report, f"wrote {report['path']} ({report['thumbnails']} thumbnails)")
    return 0


def build_parser():
    parser, commands = command_parser(PROG, __doc__)
    p = add_command(commands, "embed", cmd_embed, "embed the crops that have no vector yet",
                    settings=[GraphConfig])
    p.add_argument("--all", action="store_true", help="embed every crop again")
    p = add_command(commands, "build", cmd_build, "add crops mined since the last build to the "
                    "graph (embedding those without a vector first)", settings=[GraphConfig])
    p.add_argument("--rebuild", action="store_true", help="replace the whole graph")
    add_command(commands, "stats", cmd_stats, "figures of the graph")
    p = add_command(commands, "show", cmd_show, "a crop's neighbourhood")
    p.add_argument("node", type=row_id, help="crop id")
    p.add_argument("--radius", type=natural, default=1, help="hops around the crop")
    p.add_argument("--png", nargs="?", const="", default=None, metavar="PATH",
                   help="also draw a contact sheet (default <workdir>/reports/show-NODE.png)")
    p = add_command(commands, "explain", cmd_explain, "why a pair exists")
    p.add_argument("pair", help="pair id, or two crop ids as A,B")
    p = add_command(commands, "sheet", cmd_sheet, "a contact sheet of tracks, clusters or pairs")
    p.add_argument("what", choices=SHEET_KINDS)
    p.add_argument("--ids", type=row_id, nargs="+", default=(), help="chosen ids (default: random)")
    p.add_argument("--n", type=count, default=8, help="rows when choosing at random")
    p.add_argument("--kind", default="transitive", choices=PAIR_KINDS,
                   help="pair kind for random pairs")
    p.add_argument("--per-row", type=count, default=10, help="most crops per row")
    p.add_argument("--seed", type=natural, default=0)
    p.add_argument("--out", default=None, help="PNG path (default <workdir>/reports/graph-WHAT.png)")
    p = add_command(commands, "export", cmd_export, "a static HTML gallery of clusters and pairs")
    p.add_argument("--html", required=True, metavar="DIR", help="folder to write index.html into")
    p.add_argument("--clusters", type=count, default=20, help="largest clusters to show")
    p.add_argument("--pairs", type=count, default=20, help="random pairs of each kind")
    p.add_argument("--seed", type=natural, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
