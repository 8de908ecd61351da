"""Invariance sets for RIS: which images show one object under one kind of change.

Sources: a generic folder layout ``root/<class>/<set>/<image>``; the sets rendered from
held-out 3D objects by ``vidmine-mine synth-sets`` (viewpoint, illumination, occlusion,
instance, and object retrieval across renders); the layouts the RIS paper used (ALOI,
GOT-10k, Pascal3D+) when a user has them; and vidmine's own store: held-out tracks
(viewpoint/temporal), plus *synthetic* occlusion and illumination-colour sets made from
held-out crops, labelled synthetic in every report.
"""
from __future__ import annotations

import configparser
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import select

from vidmine.storage.schema import crops, pairs
from vidmine.storage.store import Store

from .probe import IMAGE_EXTS


@dataclass
class InvarianceSets:
    name: str                          # e.g. "viewpoint (held-out tracks)"
    images: list                       # paths or RGB arrays
    set_ids: np.ndarray
    class_ids: np.ndarray
    synthetic: bool = False
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.set_ids = np.asarray(self.set_ids, np.int64)
        self.class_ids = np.asarray(self.class_ids, np.int64)
        if not (len(self.images) == len(self.set_ids) == len(self.class_ids)):
            raise ValueError(f"{self.name}: images, set ids and class ids differ in length")
        if len(self.images) == 0:
            raise ValueError(f"{self.name}: no images")

    @property
    def label(self) -> str:
        return f"{self.name} [synthetic]" if self.synthetic else self.name


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def from_folder(root: str | Path, name: str | None = None) -> InvarianceSets:
    """``root/<class>/<set>/<image>``: any invariance a user can lay out as folders."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no invariance-set folder at {root}")
    images, sets, classes = [], [], []
    set_no = 0
    for ci, cdir in enumerate(sorted(d for d in root.iterdir() if d.is_dir())):
        for sdir in sorted(d for d in cdir.iterdir() if d.is_dir()):
            files = _images_in(sdir)
            images += files
            sets += [set_no] * len(files)
            classes += [ci] * len(files)
            set_no += 1
    if not images:
        raise ValueError(f"{root} has no <class>/<set>/<image> files")
    return InvarianceSets(name or root.name, images, sets, classes, source=str(root))


RENDERED_FORMAT = "vidmine-rendered-sets-v1"


def _rendered_manifest(root: str | Path) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no rendered sets at {root} (make them with `vidmine-mine "
                                "synth-sets DIR`)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != RENDERED_FORMAT:
        raise ValueError(f"{path} is not a manifest of {RENDERED_FORMAT}")
    return manifest


def rendered(root: str | Path) -> list[InvarianceSets]:
    """Every RIS set of a folder written by ``vidmine-mine synth-sets``, in its order."""
    manifest = _rendered_manifest(root)
    return [from_folder(Path(root) / entry["path"], name=f"{kind} (rendered)")
            for kind, entry in manifest["kinds"].items()]


def rendered_retrieval(root: str | Path) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """(image paths, object label, render group) of the retrieval part of rendered sets:
    ``retrieval/<object>/<render>/<image>``."""
    folder = Path(root) / _rendered_manifest(root)["retrieval"]["path"]
    paths, labels, groups = [], [], []
    for label, obj in enumerate(sorted(d for d in folder.iterdir() if d.is_dir())):
        for group, render in enumerate(sorted(d for d in obj.iterdir() if d.is_dir())):
            files = _images_in(render)
            paths += files
            labels += [label] * len(files)
            groups += [label * 1000 + group] * len(files)
    if not paths:
        raise ValueError(f"no retrieval images under {folder}")
    return paths, np.asarray(labels), np.asarray(groups)


ALOI_PATTERNS = {
    # ALOI file names: <obj>_r<angle>.png (view), <obj>_l<light>c<camera>.png (illumination
    # direction), <obj>_i<colour temperature>.png (illumination colour).
    "viewpoint": re.compile(r"^(\d+)_r(\d+)$"),
    "illumination-direction": re.compile(r"^(\d+)_l(\d+)c(\d+)$"),
    "illumination-colour": re.compile(r"^(\d+)_i(\d+)$"),
}


def aloi(root: str | Path, kind: str) -> InvarianceSets:
    """ALOI: one object is one class; its images under the chosen change form its set(s).
    For illumination direction, each camera gives one set (only the light moves)."""
    if kind not in ALOI_PATTERNS:
        raise ValueError(f"ALOI kind must be one of {sorted(ALOI_PATTERNS)}")
    pattern = ALOI_PATTERNS[kind]
    groups: dict[tuple, list[Path]] = defaultdict(list)
    for p in sorted(Path(root).rglob("*")):
        m = pattern.match(p.stem) if p.suffix.lower() in IMAGE_EXTS else None
        if m:
            obj = int(m.group(1))
            groups[(obj, int(m.group(3)) if kind == "illumination-direction" else 0)].append(p)
    return _from_groups(f"{kind} (ALOI)", groups, root)


def _from_groups(name: str, groups: dict[tuple, list], root, synthetic=False) -> InvarianceSets:
    if not groups:
        raise ValueError(f"no images of the expected layout under {root}")
    objs = {obj: i for i, obj in enumerate(sorted({k[0] for k in groups}))}
    images, sets, classes = [], [], []
    for s, (key, members) in enumerate(sorted(groups.items())):
        images += members
        sets += [s] * len(members)
        classes += [objs[key[0]]] * len(members)
    return InvarianceSets(name, images, sets, classes, synthetic=synthetic, source=str(root))


def got10k(root: str | Path, max_per_sequence: int = 40) -> InvarianceSets:
    """GOT-10k occlusion: per sequence, the object's box crops across occlusion levels
    (``cover.label`` 0-8); a sequence is a set, its ``major_class`` the class."""
    root = Path(root)
    images, sets, classes, class_names = [], [], [], {}
    seqs = sorted(d for d in root.rglob("*") if (d / "groundtruth.txt").is_file())
    for s, seq in enumerate(seqs):
        boxes = np.loadtxt(seq / "groundtruth.txt", delimiter=",", ndmin=2)
        cover = (np.loadtxt(seq / "cover.label", ndmin=1) if (seq / "cover.label").is_file()
                 else np.full(len(boxes), -1))
        frames = _images_in(seq)
        meta = configparser.ConfigParser()
        cls = seq.name
        if (seq / "meta_info.ini").is_file():
            meta.read_string("[m]\n" + (seq / "meta_info.ini").read_text().split("\n", 1)[-1])
            cls = meta["m"].get("major_class", cls)
        # Spread the picks over the occlusion levels present, visible frames only.
        visible = [i for i in range(min(len(frames), len(boxes))) if cover[i] != 0]
        visible.sort(key=lambda i: cover[i])
        picks = visible[:: max(1, len(visible) // max_per_sequence)][:max_per_sequence]
        for i in picks:
            x, y, w, h = boxes[i]
            img = cv2.imread(str(frames[i]))
            if img is None or w < 4 or h < 4:
                continue
            crop = img[int(y):int(y + h), int(x):int(x + w)]
            images.append(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
            sets.append(s)
            classes.append(class_names.setdefault(cls, len(class_names)))
    if not images:
        raise ValueError(f"no GOT-10k sequences (groundtruth.txt + frames) under {root}")
    return InvarianceSets("occlusion (GOT-10k)", images, sets, classes, source=str(root))


def pascal3d(root: str | Path, kind: str = "instance", azimuth_bins: int = 8,
             set_size: int = 20) -> InvarianceSets:
    """Pascal3D+: ``instance`` sets are objects of one category within one azimuth bin
    (viewpoint fixed, instance varies); ``instance+viewpoint`` sets are random groups of
    one category's objects over all viewpoints. The category is the class."""
    from scipy.io import loadmat
    if kind not in ("instance", "instance+viewpoint"):
        raise ValueError("Pascal3D+ kind must be instance or instance+viewpoint")
    root = Path(root)
    objects = []  # (category, azimuth, image path, box)
    for ann in sorted((root / "Annotations").glob("*/*.mat")):
        rec = loadmat(ann, squeeze_me=True, struct_as_record=False)["record"]
        img = root / "Images" / ann.parent.name / rec.filename
        for obj in np.atleast_1d(rec.objects):
            vp = getattr(obj, "viewpoint", None)
            if vp is None or not hasattr(vp, "azimuth"):
                continue
            objects.append((str(obj.__dict__["class"]), float(vp.azimuth), img,
                            np.asarray(obj.bbox, float)))
    if not objects:
        raise ValueError(f"no Pascal3D+ annotations under {root / 'Annotations'}")
    rng = np.random.default_rng(0)
    groups: dict[tuple, list] = defaultdict(list)
    for cat, az, img, box in objects:
        key = int(az % 360 // (360 / azimuth_bins)) if kind == "instance" else 0
        groups[(cat, key)].append((img, box))
    images, sets, classes = [], [], []
    cats = {c: i for i, c in enumerate(sorted({k[0] for k in groups}))}
    set_no = 0
    for (cat, _), members in sorted(groups.items()):
        order = rng.permutation(len(members))
        for lo in range(0, len(order), set_size):
            for j in order[lo:lo + set_size]:
                img_path, (x0, y0, x1, y1) = members[j]
                img = cv2.imread(str(img_path))
                if img is None:
                    continue
                crop = img[int(y0):int(y1), int(x0):int(x1)]
                images.append(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
                sets.append(set_no)
                classes.append(cats[cat])
            set_no += 1
    return InvarianceSets(f"{kind} (Pascal3D+)", images, sets, classes, source=str(root))


# -- sets from vidmine's own store ---------------------------------------------------------

def held_out_tracks(store: Store, max_tracks: int = 300, crops_per_track: int = 8,
                    min_crops: int = 3, seed: int = 0) -> dict[int, np.ndarray]:
    """Crop ids of held-out tracks: tracks of videos in the validation split of the pairs
    (all tracks when no pairs exist yet), those with at least ``min_crops`` crops."""
    with store.index.read() as conn:
        val_pairs = select(crops.c.video_id).join(pairs, pairs.c.anchor == crops.c.id) \
            .where(pairs.c.split == "val").distinct()
        val_videos = set(conn.execute(val_pairs).scalars())
        cols = store.index.read_columns(conn, select(crops.c.id, crops.c.track_id,
                                                     crops.c.video_id)
                                        .where(crops.c.kind == "object")
                                        .order_by(crops.c.track_id, crops.c.frame_index))
    if val_videos:
        keep = np.isin(cols["video_id"], list(val_videos))
        cols = {k: v[keep] for k, v in cols.items()}
    tracks: dict[int, np.ndarray] = {}
    for tid in np.unique(cols["track_id"]):
        ids = cols["id"][cols["track_id"] == tid]
        if len(ids) >= min_crops:
            pick = np.linspace(0, len(ids) - 1, min(crops_per_track, len(ids))).round().astype(int)
            tracks[int(tid)] = ids[np.unique(pick)]
    rng = np.random.default_rng(seed)
    chosen = sorted(tracks)
    if len(chosen) > max_tracks:
        chosen = sorted(rng.choice(chosen, max_tracks, replace=False).tolist())
    return {t: tracks[t] for t in chosen}


def store_sets(store: Store, kinds: tuple[str, ...] = ("viewpoint", "occlusion", "illumination"),
               max_tracks: int = 300, variants: int = 8, seed: int = 0) -> list[InvarianceSets]:
    """Invariance sets from held-out tracks. ``viewpoint``: one set = the crops of one track
    (the object as it moves and turns); ``occlusion`` / ``illumination``: one set = one
    crop under synthetic occluders / colour casts. Each track is its own class."""
    tracks = held_out_tracks(store, max_tracks=max_tracks, seed=seed)
    if len(tracks) < 2:
        raise ValueError("need at least 2 held-out tracks with 3+ crops: mine more videos")
    images_by_id = store.load_crops(np.concatenate(list(tracks.values())), job="vidmine-eval")
    tracks = {t: [i for i in ids if int(i) in images_by_id] for t, ids in tracks.items()}
    tracks = {t: ids for t, ids in tracks.items() if len(ids) >= 3}
    rng = np.random.default_rng(seed)
    out = []
    for kind in kinds:
        images, sets, classes = [], [], []
        for s, ids in enumerate(tracks.values()):
            if kind == "viewpoint":
                members = [images_by_id[int(i)] for i in ids]
            else:
                base = images_by_id[int(ids[len(ids) // 2])]
                make = occlude if kind == "occlusion" else recolour
                members = [make(base, rng) for _ in range(variants)]
            images += members
            sets += [s] * len(members)
            classes += [s] * len(members)
        name = {"viewpoint": "viewpoint (held-out tracks)",
                "occlusion": "occlusion (held-out crops)",
                "illumination": "illumination colour (held-out crops)"}.get(kind)
        if name is None:
            raise ValueError(f"unknown store set kind {kind!r}")
        out.append(InvarianceSets(name, images, sets, classes, synthetic=kind != "viewpoint",
                                  source="store", meta={"tracks": len(tracks)}))
    return out


def occlude(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cover 10-50 % of the crop with a random grey, noise or black rectangle."""
    h, w = img.shape[:2]
    area = rng.uniform(0.1, 0.5) * h * w
    aspect = rng.uniform(0.5, 2.0)
    bh, bw = min(h, int(np.sqrt(area * aspect))), min(w, int(np.sqrt(area / aspect)))
    y, x = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
    out = img.copy()
    fill = rng.integers(3)
    out[y:y + bh, x:x + bw] = (rng.integers(0, 255, (bh, bw, 3)) if fill == 0
                               else rng.integers(0, 255) if fill == 1 else 0)
    return out


def recolour(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A colour cast like a light of another colour temperature: per-channel gains."""
    gains = np.exp(rng.normal(0, 0.25, 3)).astype(np.float32)
    return np.clip(img.astype(np.float32) * gains, 0, 255).astype(np.uint8)
