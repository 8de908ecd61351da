"""``vidmine-graph``: build the invariance graph and look at it.

    vidmine-graph embed [--all]             one vector per crop (hand-crafted or a checkpoint)
    vidmine-graph build [--rebuild]         clusters, edges and pairs for crops new since the last build
    vidmine-graph stats                     nodes, edges, pairs, clusters, components, degrees
    vidmine-graph show NODE [--png [PATH]]  a crop's neighbourhood
    vidmine-graph explain PAIR              the chain of edges behind a pair (id, or 'A,B')
    vidmine-graph sheet tracks|clusters|pairs   a PNG contact sheet
    vidmine-graph export --html DIR         a static, offline HTML gallery
    vidmine-graph verify [--repair]         storage consistency and graph invariants

Every command takes ``--json`` and then prints one JSON object and nothing else.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sqlalchemy import func, select, union
from sqlalchemy.orm import aliased

from vidmine.storage.cliutil import UsageError, add_common_args, open_from_args, print_json, run_main
from vidmine.storage.config import add_config_args, build_config, load_toml
from vidmine.storage.schema import crops, edges, pairs
from vidmine.storage.verify import verify as verify_storage

from .build import build, graph_rows
from .config import GraphConfig
from .embed import embed
from .export import SHEET_KINDS, export_html, sheet
from .inspect import explain, format_explain, format_show, show, stats

PROG = "vidmine-graph"


def _graph_config(args) -> GraphConfig:
    cfg = build_config(GraphConfig, args, load_toml(args.config), "graph")
    try:
        cfg.check()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return cfg


def _print(args, obj: dict, text: str) -> None:
    if args.json:
        print_json(obj)
    else:
        print(text)


def _lines(obj: dict, indent: str = "") -> str:
    out = []
    for k, v in obj.items():
        if isinstance(v, dict):
            out.append(f"{indent}{k}:")
            out.append(_lines(v, indent + "  "))
        else:
            out.append(f"{indent}{k}: {v}")
    return "\n".join(line for line in out if line)


def cmd_embed(args) -> int:
    cfg = _graph_config(args)
    with open_from_args(args) as store:
        summary = embed(store, cfg, everything=args.all, progress=not args.json)
    _print(args, summary, _lines(summary))
    return 0


def cmd_build(args) -> int:
    cfg = _graph_config(args)
    with open_from_args(args) as store:
        summary = build(store, cfg, rebuild=args.rebuild)
    _print(args, summary, _lines(summary))
    return 0


def cmd_stats(args) -> int:
    with open_from_args(args) as store:
        report = stats(store)
    _print(args, report, _lines(report))
    return 0


def _show_png(store, report: dict, out: Path) -> Path:
    from vidmine.storage.sheets import contact_sheet
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
    with open_from_args(args) as store:
        report = show(store, args.node, args.radius)
        if args.png is not None:
            out = Path(args.png) if args.png else store.subdir("reports") / f"show-{args.node}.png"
            report["png"] = str(_show_png(store, report, out))
    text = format_show(report) + (f"\nsheet: {report['png']}" if "png" in report else "")
    _print(args, report, text)
    return 0


def cmd_explain(args) -> int:
    with open_from_args(args) as store:
        report = explain(store, args.pair)
    _print(args, report, format_explain(report))
    return 0


def cmd_sheet(args) -> int:
    with open_from_args(args) as store:
        out = Path(args.out) if args.out else store.subdir("reports") / f"graph-{args.what}.png"
        report = sheet(store, args.what, out, ids=args.ids, n=args.n, kind=args.kind,
                       per_row=args.per_row, seed=args.seed)
    _print(args, report, f"wrote {report['path']} ({report['rows']} rows)")
    return 0


def cmd_export(args) -> int:
    with open_from_args(args) as store:
        report = export_html(store, Path(args.html), n_clusters=args.clusters,
                             n_pairs=args.pairs, seed=args.seed)
    _print(args, report, f"wrote {report['path']} ({report['thumbnails']} thumbnails)")
    return 0


def graph_checks(store) -> dict:
    """Invariants of the graph: inter edges never inside one track, no video in both splits."""
    a, b = aliased(crops), aliased(crops)
    with store.index.read() as conn:
        same_track = conn.execute(select(func.count()).select_from(edges)
                                  .join(a, a.c.id == edges.c.src).join(b, b.c.id == edges.c.dst)
                                  .where(graph_rows(edges) & (edges.c.kind == "inter")
                                         & (a.c.track_id == b.c.track_id))).scalar_one()
        video_split = union(*(select(crops.c.video_id, pairs.c.split).join(crops, crops.c.id == end)
                              .where(graph_rows(pairs)) for end in (pairs.c.anchor, pairs.c.positive))
                            ).subquery()
        both = conn.execute(select(func.count()).select_from(
            select(video_split.c.video_id).group_by(video_split.c.video_id)
            .having(func.count() > 1).subquery())).scalar_one()
    return {"inter_edges_within_a_track": int(same_track), "videos_in_both_splits": int(both)}


def cmd_verify(args) -> int:
    with open_from_args(args) as store:
        report = verify_storage(store, repair=args.repair).as_dict()
        report["graph"] = graph_checks(store)
    report["ok"] = bool(report["ok"] and not any(report["graph"].values()))
    _print(args, report, _lines({k: v for k, v in report.items() if k != "examples"}))
    return 0 if report["ok"] else 1


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, fn, help_text, graph_settings=False):
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_common_args(p)
        p.add_argument("--json", action="store_true", help="print one JSON object, nothing else")
        if graph_settings:
            add_config_args(p, GraphConfig)
        p.set_defaults(fn=fn)
        return p

    p = command("embed", cmd_embed, "embed the crops that have no vector yet", True)
    p.add_argument("--all", action="store_true", help="embed every crop again")
    p = command("build", cmd_build, "add crops mined since the last build to the graph", True)
    p.add_argument("--rebuild", action="store_true", help="replace the whole graph")
    command("stats", cmd_stats, "figures of the graph")
    p = command("show", cmd_show, "a crop's neighbourhood")
    p.add_argument("node", type=int, help="crop id")
    p.add_argument("--radius", type=int, default=1, help="hops around the crop")
    p.add_argument("--png", nargs="?", const="", default=None, metavar="PATH",
                   help="also draw a contact sheet (default <workdir>/reports/show-NODE.png)")
    p = command("explain", cmd_explain, "why a pair exists")
    p.add_argument("pair", help="pair id, or two crop ids as A,B")
    p = command("sheet", cmd_sheet, "a contact sheet of tracks, clusters or pairs")
    p.add_argument("what", choices=SHEET_KINDS)
    p.add_argument("--ids", type=int, nargs="+", default=(), help="chosen ids (default: random)")
    p.add_argument("--n", type=int, default=8, help="rows when choosing at random")
    p.add_argument("--kind", default="transitive", choices=("intra", "inter", "transitive"),
                   help="pair kind for random pairs")
    p.add_argument("--per-row", type=int, default=10, help="most crops per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="PNG path (default <workdir>/reports/graph-WHAT.png)")
    p = command("export", cmd_export, "a static HTML gallery of clusters and pairs")
    p.add_argument("--html", required=True, metavar="DIR", help="folder to write index.html into")
    p.add_argument("--clusters", type=int, default=20, help="largest clusters to show")
    p.add_argument("--pairs", type=int, default=20, help="random pairs of each kind")
    p.add_argument("--seed", type=int, default=0)
    p = command("verify", cmd_verify, "storage consistency and graph invariants")
    p.add_argument("--repair", action="store_true", help="delete orphan rows and bytes")
    return parser


def _main(argv: list[str] | None) -> int:
    args = make_parser().parse_args(argv)
    if getattr(args, "radius", 1) < 0:
        raise UsageError("--radius must be >= 0")
    return args.fn(args)


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
