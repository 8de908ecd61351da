"""Pictures of the graph: PNG contact sheets and a static HTML gallery.

Sheets render through ``vidmine.sheets.contact_sheet`` like every other vidmine sheet. The
gallery is one ``index.html`` beside a ``thumbs/`` folder: no scripts, no remote files, so it
opens offline; every text from the index (video file names above all) is HTML-escaped.
"""
from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

import numpy as np
from sqlalchemy import func, select

from vidmine.errors import UsageError
from vidmine.images import resize_long_side, write_image
from vidmine.sheets import contact_sheet
from vidmine.storage.schema import PAIR_KINDS, clusters, crops, graph_rows, pairs
from vidmine.storage.store import Store

from .inspect import crop_info, explain

SHEET_KINDS = ("tracks", "clusters", "pairs")


def _require_graph(store: Store) -> None:
    with store.index.read() as conn:
        if conn.execute(select(clusters.c.crop_id).where(graph_rows(clusters)).limit(1)).first() is None:
            raise UsageError("no graph yet: run `vidmine-graph build` first")


def _pick(values: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(values, min(n, len(values)), replace=False)) if len(values) else values


def track_rows(store: Store, ids, n: int, rng, per_row: int):
    with store.index.read() as conn:
        cols = store.index.read_columns(conn, select(crops.c.id, crops.c.track_id)
                                        .where((crops.c.kind == "object") & crops.c.track_id.is_not(None))
                                        .order_by(crops.c.track_id, crops.c.frame_index),
                                        dtypes=dict(id=np.int64, track_id=np.int64))
    if len(cols["id"]) == 0:
        raise UsageError("the index has no object crops yet (mine some videos first)")
    chosen = np.asarray(ids, np.int64) if ids else _pick(np.unique(cols["track_id"]), n, rng)
    return _member_rows(cols["id"], cols["track_id"], chosen, per_row, "track",
                        lambda t, members: f"track {t}")


def cluster_rows(store: Store, ids, n: int, rng, per_row: int):
    _require_graph(store)
    with store.index.read() as conn:
        cols = store.index.read_columns(conn, select(clusters.c.crop_id, clusters.c.fine)
                                        .where(graph_rows(clusters)).order_by(clusters.c.crop_id),
                                        dtypes=dict(crop_id=np.int64, fine=np.int64))
    values, sizes = np.unique(cols["fine"], return_counts=True)
    chosen = np.asarray(ids, np.int64) if ids else _pick(values[sizes > 1], n, rng)
    return _member_rows(cols["crop_id"], cols["fine"], chosen, per_row, "graph cluster",
                        lambda c, members: f"cluster {c} ({len(members)})")


def _member_rows(crop_ids, group_of, chosen, per_row: int, what: str, label):
    """One sheet row per chosen group (track or cluster): its first ``per_row`` crops."""
    rows, labels = [], []
    for g in chosen:
        members = crop_ids[group_of == g]
        if len(members) == 0:
            raise UsageError(f"no {what} {g} with object crops")
        rows.append(members[:per_row].tolist())
        labels.append(label(g, members))
    return rows, labels


def pair_rows(store: Store, ids, n: int, rng, kind: str):
    """Each pair as the chain of crops behind it (anchor ... positive)."""
    _require_graph(store)
    if not ids:
        with store.index.read() as conn:
            all_ids = np.asarray(conn.execute(select(pairs.c.id).where(
                graph_rows(pairs) & (pairs.c.kind == kind))).scalars().all(), np.int64)
        if len(all_ids) == 0:
            raise UsageError(f"the graph has no {kind} pairs")
        ids = _pick(all_ids, n, rng).tolist()
    reports = [explain(store, str(i)) for i in ids]
    return [r["crops"] for r in reports], [f"pair {r['pair']} {r['kind']}" for r in reports]


def sheet(store: Store, what: str, out_png: Path, ids=(), n: int = 8, kind: str = "transitive",
          per_row: int = 10, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    if what == "tracks":
        rows, labels = track_rows(store, ids, n, rng, per_row)
    elif what == "clusters":
        rows, labels = cluster_rows(store, ids, n, rng, per_row)
    elif what == "pairs":
        rows, labels = pair_rows(store, ids, n, rng, kind)
    else:
        raise UsageError(f"a sheet shows one of {SHEET_KINDS}, not {what!r}")
    if not rows:
        raise UsageError(f"no {what} to show")
    path = contact_sheet(store, rows, out_png, labels)
    return {"path": str(path), "rows": len(rows), "labels": labels}


def _thumbnails(store: Store, crop_ids, folder: Path, size: int) -> None:
    for crop_id, img in store.load_crops(crop_ids, job="vidmine-graph export").items():
        write_image(folder / f"{crop_id}.jpg", resize_long_side(img, size, upscale=True)[0])


def _figure(crop: dict) -> str:
    path = crop["video_path"]
    return (f'<figure title="{html.escape(path)}">'
            f'<img src="thumbs/{quote(str(crop["crop"]))}.jpg" alt="crop {crop["crop"]}">'
            f'<figcaption>{crop["crop"]} &middot; {html.escape(Path(path).name)}<br>'
            f'track {crop["track"]} f{crop["frame"]}</figcaption></figure>')


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; background: #fafafa; }}
section {{ margin-bottom: 1.5em; }} h2 {{ font-size: 1.1em; margin: .6em 0 .2em; }}
.row {{ display: flex; flex-wrap: wrap; gap: 6px; }}
figure {{ margin: 0; width: {thumb}px; font-size: 10px; overflow-wrap: anywhere; }}
img {{ width: {thumb}px; height: {thumb}px; object-fit: contain; background: #222; }}
</style></head><body>
<h1>{title}</h1>
{body}
</body></html>
"""


def export_html(store: Store, out_dir: Path, n_clusters: int = 20, n_pairs: int = 20,
                per_row: int = 12, thumb: int = 96, seed: int = 0) -> dict:
    """Write ``out_dir/index.html`` and ``out_dir/thumbs/``: the largest clusters, and a
    random sample of pairs of each kind shown as their chains."""
    _require_graph(store)
    rng = np.random.default_rng(seed)
    with store.index.read() as conn:
        sizes = conn.execute(select(clusters.c.fine, func.count().label("n")).where(graph_rows(clusters))
                             .group_by(clusters.c.fine).order_by(func.count().desc(), clusters.c.fine)
                             .limit(n_clusters)).all()
    cluster_ids = [c for c, size in sizes if size > 1] or [c for c, _ in sizes]
    c_rows, c_labels = cluster_rows(store, cluster_ids, n_clusters, rng, per_row)
    sections = [("Clusters", c_rows, c_labels)]
    for kind in PAIR_KINDS:
        try:
            p_rows, p_labels = pair_rows(store, (), n_pairs, rng, kind)
        except UsageError:  # a graph may lack a kind (no inter edges yet)
            continue
        sections.append((f"{kind.capitalize()} pairs", p_rows, p_labels))
    all_ids = {i for _, rows, _ in sections for row in rows for i in row}
    info = crop_info(store, all_ids)
    _thumbnails(store, all_ids, Path(out_dir) / "thumbs", thumb)
    body = []
    for title, rows, labels in sections:
        body.append(f"<h2>{html.escape(title)}</h2>")
        for row, label in zip(rows, labels):
            figures = "".join(_figure(info[i]) for i in row)
            body.append(f'<section><div>{html.escape(label)}</div><div class="row">{figures}</div></section>')
    page = Path(out_dir) / "index.html"
    page.write_text(PAGE.format(title="vidmine graph", thumb=thumb, body="\n".join(body)),
                    encoding="utf-8")
    return {"path": str(page), "clusters": len(c_rows),
            "pair_rows": sum(len(rows) for _, rows, _ in sections[1:]), "thumbnails": len(all_ids)}
