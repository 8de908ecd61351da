"""How good the graph's pairs are, where the videos come with ground truth.

Synthetic videos (``vidmine-mine synth``) have ``<name>.truth.json`` beside them: per frame
and object its visible box, and per object its instance id and category. A crop belongs to
the object whose visible box holds the crop's centre in the crop's frame (the one it
overlaps most where several do), or to none. Then:

* an intra pair is right when both crops show one instance (tracking did not drift);
* an inter edge or a transitive pair is right when both crops show one category (the
  clustering joined alike objects), and also counted when they show one instance;
* rendered videos (``--kind solids``) also give each object's rotation per frame, so an
  intra pair on one instance has a *turn*: the angle of the rotation between its two views,
  which is how much viewpoint change the pair can teach.

Crops of videos without a truth file are left out of every share.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from vidmine.arrays import lookup_sorted
from vidmine.storage.schema import crops, videos
from vidmine.storage.store import Store

from .build import Graph


def truth_path(video_path: str) -> Path:
    return Path(video_path).with_suffix(".truth.json")


@dataclass
class CropTruth:
    """Ground truth of every object crop, in crop id order; -1 / NaN where unknown."""
    ids: np.ndarray          # crop ids, sorted
    instance: np.ndarray     # instance id of the object the crop shows
    category: np.ndarray     # category code of that object
    rotation: np.ndarray     # (n, 3, 3) the object's rotation in the crop's frame
    videos_with_truth: int


def crop_labels(store: Store) -> CropTruth:
    """Match every object crop to the ground truth of its video."""
    with store.index.read() as conn:
        paths = dict(conn.execute(select(videos.c.id, videos.c.path)).all())
        cols = store.index.read_columns(conn, select(
            crops.c.id, crops.c.video_id, crops.c.frame_index, crops.c.x0, crops.c.y0,
            crops.c.x1, crops.c.y1).where(crops.c.kind == "object").order_by(crops.c.id),
            dtypes=dict(id=np.int64, video_id=np.int64, frame_index=np.int64))
    n = len(cols["id"])
    instance = np.full(n, -1, np.int64)
    category = np.full(n, -1, np.int64)
    rotation = np.full((n, 3, 3), np.nan)
    names: dict[str, int] = {}
    with_truth = 0
    for vid in np.unique(cols["video_id"]):   # a loop over videos, vectorized over their crops
        path = truth_path(paths.get(int(vid), ""))
        if not path.is_file():
            continue
        truth = json.loads(path.read_text())
        objects = truth.get("objects") or []
        if not objects:
            continue
        with_truth += 1
        boxes = np.asarray(truth["boxes"], np.float64)            # frames, objects, 4
        boxes[boxes < 0] = np.nan
        rows = np.flatnonzero(cols["video_id"] == vid)
        frame = np.clip(cols["frame_index"][rows], 0, len(boxes) - 1)
        crop_box = np.stack([cols[k][rows] for k in ("x0", "y0", "x1", "y1")], 1).astype(np.float64)
        label, ok = _match(crop_box, boxes[frame])
        instance[rows[ok]] = np.asarray([o["instance"] for o in objects])[label[ok]]
        codes = np.asarray([names.setdefault(o["category"], len(names)) for o in objects])
        category[rows[ok]] = codes[label[ok]]
        if "poses" in truth:                                       # frames, objects, 12
            poses = np.asarray(truth["poses"], np.float64)
            rotation[rows[ok]] = poses[frame[ok], label[ok], :9].reshape(-1, 3, 3)
    return CropTruth(cols["id"], instance, category, rotation, with_truth)


def turn_degrees(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle of the rotation from each ``a`` (n, 3, 3) to ``b``: NaN where either is unknown."""
    relative = np.einsum("nij,nkj->nik", b, a)
    cos = (np.trace(relative, axis1=1, axis2=2) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def _match(crop_box: np.ndarray, object_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For crops (n, 4) and the boxes of the objects in their frames (n, k, 4): the object
    holding each crop's centre with the largest IoU, and whether there is one."""
    cx = (crop_box[:, 0] + crop_box[:, 2]) / 2
    cy = (crop_box[:, 1] + crop_box[:, 3]) / 2
    ob = object_boxes
    cb = crop_box[:, None, :]
    inside = (ob[..., 0] <= cx[:, None]) & (cx[:, None] <= ob[..., 2]) \
        & (ob[..., 1] <= cy[:, None]) & (cy[:, None] <= ob[..., 3])
    w = np.clip(np.minimum(cb[..., 2], ob[..., 2]) - np.maximum(cb[..., 0], ob[..., 0]), 0, None)
    h = np.clip(np.minimum(cb[..., 3], ob[..., 3]) - np.maximum(cb[..., 1], ob[..., 1]), 0, None)
    inter = np.nan_to_num(w * h)
    union = _area(cb) + _area(ob) - inter
    iou = np.nan_to_num(inter / np.maximum(union, 1e-9))
    iou = np.where(inside, iou, -1.0)
    best = np.argmax(iou, 1)
    return best, iou[np.arange(len(best)), best] >= 0


def _area(b: np.ndarray) -> np.ndarray:
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def pair_quality(store: Store, graph: Graph) -> dict | None:
    """Shares of right pairs and edges of ``graph`` (see the module doc); None when no video
    of the store has ground truth."""
    truth = crop_labels(store)
    if truth.videos_with_truth == 0:
        return None
    ids, instance, category = truth.ids, truth.instance, truth.category

    def share(a, b, labels) -> dict:
        ra, rb = lookup_sorted(ids, a), lookup_sorted(ids, b)
        la, lb = labels[ra], labels[rb]
        known = (ra >= 0) & (rb >= 0) & (la >= 0) & (lb >= 0)
        return {"count": int(len(a)), "scored": int(known.sum()),
                "right": round(float((la[known] == lb[known]).mean()), 4) if known.any() else None}

    inter = graph.edge_kind == "inter"
    out = {"videos_with_truth": truth.videos_with_truth,
           "crops_on_an_object": round(float((instance >= 0).mean()), 4) if len(ids) else None}
    kind = graph.pair_kind
    out["intra_pairs_one_instance"] = share(graph.pair_anchor[kind == "intra"],
                                            graph.pair_positive[kind == "intra"], instance)
    turn = pair_turn(truth, graph.pair_anchor[kind == "intra"], graph.pair_positive[kind == "intra"])
    if turn is not None:
        out["intra_pairs_turn_deg"] = turn
    out["inter_edges_one_category"] = share(graph.edge_src[inter], graph.edge_dst[inter], category)
    out["inter_edges_one_instance"] = share(graph.edge_src[inter], graph.edge_dst[inter], instance)
    out["transitive_pairs_one_category"] = share(graph.pair_anchor[kind == "transitive"],
                                                 graph.pair_positive[kind == "transitive"], category)
    return out


def instance_turns(truth: CropTruth, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """For pairs of crop ids ``a``, ``b``: the turns (degrees) of those on one instance with
    known poses, and the share on one instance of the pairs whose crops both have one."""
    ra, rb = lookup_sorted(truth.ids, a), lookup_sorted(truth.ids, b)
    known = (ra >= 0) & (rb >= 0)
    ra, rb = ra[known], rb[known]
    labelled = (truth.instance[ra] >= 0) & (truth.instance[rb] >= 0)
    one = labelled & (truth.instance[ra] == truth.instance[rb])
    turn = turn_degrees(truth.rotation[ra[one]], truth.rotation[rb[one]])
    return turn[np.isfinite(turn)], float(one.sum() / max(labelled.sum(), 1))


def pair_turn(truth: CropTruth, a: np.ndarray, b: np.ndarray) -> dict | None:
    """How far the views of pairs on one instance turn: median and 90th percentile in
    degrees (see instance_turns); None where no pair has known poses."""
    turn, _ = instance_turns(truth, a, b)
    if not len(turn):
        return None
    median, p90 = np.percentile(turn, [50, 90])
    return {"scored": int(len(turn)), "median": round(float(median), 1), "p90": round(float(p90), 1)}
