"""Synthetic videos with ground truth, in two kinds:

* ``flat``: textured ellipses moving, turning in the image plane and scaling over a textured
  background the camera pans across (:func:`generate_video`);
* ``solids``: textured 3D objects of six categories that turn out of plane under a moving
  light, occluding each other (``mining.scenes``, rendered by ``mining.render``).

Textures come from photos (``../shared/data/images``, or ``VIDMINE_SHARED_DATA``) when
there are any, else from procedural patterns, so nothing needs the sample data. Each video
is written as H.264 with PyAV, with ``<name>.truth.json`` beside it (boxes per frame and
object; for solids also each object's instance id, category and pose).
``track_quality`` scores a mining result against it: precision over the intra-track crop
pairs (both ends on the same object at IoU >= 0.5) and recall over the objects.
"""
from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

from vidmine.storage.ingest import VideoResult

DEFAULT_IMAGES = Path(os.environ.get(
    "VIDMINE_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")) / "images"
KINDS = ("flat", "solids")
# One material per solid, each face's hue turned up to this far (OpenCV units, 0-180) from
# the solid's own: a colour histogram then sees a different palette from each side, as it
# would on a real painted object, and cannot name the object from colour alone
# (docs/study.md: the floors under each choice measured).
FACE_HUE_SPREAD = 90
PHOTO_SHARE = 0.6   # solids textured from a photo; the rest procedural


@dataclass
class GroundTruth:
    """What a synthetic video shows. The JSON beside each video (``to_json``) is read by
    ``vidmine-graph stats`` to score pairs: ``boxes`` as below with -1 for unseen,
    ``objects`` a list of ``{"instance": id, "category": name}`` in the order of ``boxes``."""
    boxes: np.ndarray      # (frames, objects, 4) x0, y0, x1, y1 in pixels; NaN when unseen
    fps: float
    width: int
    height: int
    objects: list[dict] = field(default_factory=list)
    poses: np.ndarray | None = None   # (frames, objects, 12): rotation (row-major), position

    def to_json(self) -> dict:
        out = {"fps": self.fps, "width": self.width, "height": self.height,
               "boxes": np.where(np.isnan(self.boxes), -1, self.boxes).round(1).tolist(),
               "objects": self.objects}
        if self.poses is not None:
            out["poses"] = self.poses.round(4).tolist()
        return out

    @classmethod
    def from_json(cls, data: dict) -> GroundTruth:
        """The inverse of ``to_json`` (boxes rounded to 0.1 px; -1 back to NaN)."""
        boxes = np.asarray(data["boxes"], np.float32)
        boxes[boxes < 0] = np.nan
        poses = np.asarray(data["poses"], np.float32) if "poses" in data else None
        return cls(boxes=boxes, fps=float(data["fps"]), width=int(data["width"]),
                   height=int(data["height"]), objects=list(data.get("objects", [])), poses=poses)


def _photos(images_dir: Path | None) -> list[Path]:
    folder = images_dir if images_dir is not None else DEFAULT_IMAGES
    return sorted(folder.glob("*.jpg")) if folder.is_dir() else []


def write_h264(path: str | Path, frames: Iterable[np.ndarray], fps: int) -> None:
    """Encode RGB uint8 frames as H.264 in the container of ``path``'s extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # faststart puts the index first, as downloaded videos have it (and truncation then
    # leaves a readable head rather than an unreadable file).
    mp4 = path.suffix.lower() in (".mp4", ".mov", ".m4v")
    with av.open(str(path), mode="w", options={"movflags": "+faststart"} if mp4 else {}) as container:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
                # With macroblock-tree rate control x264 wrote other bytes for the same frames
                # from run to run (more often the more memory was reused in between); without
                # it the same frames make the same file, so a study's lost videos can be made
                # again (docs/study.md, Protocol 6).
                stream.options = {"crf": "18", "preset": "veryfast", "x264-params": "mbtree=0"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)


def _texture(rng: np.random.Generator, photos: list[Path], h: int, w: int,
             zoom: tuple[float, float] | None = None) -> np.ndarray:
    """An RGB texture of size (h, w): a random part of a photo, or a procedural pattern.
    With ``zoom`` the part is a random region magnified that much beyond covering (h, w),
    so one photo gives many different-looking textures."""
    if photos:
        img = cv2.imread(str(photos[rng.integers(len(photos))]), cv2.IMREAD_COLOR)
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        ih, iw = img.shape[:2]
        if zoom is not None:
            scale = max(h / ih, w / iw) * rng.uniform(*zoom)
            rh, rw = min(ih, int(np.ceil(h / scale))), min(iw, int(np.ceil(w / scale)))
            y, x = rng.integers(0, ih - rh + 1), rng.integers(0, iw - rw + 1)
            return cv2.resize(img[y:y + rh, x:x + rw], (w, h), interpolation=cv2.INTER_LINEAR)
        scale = max(h / ih, w / iw) * rng.uniform(1.0, 1.6)
        img = cv2.resize(img, (int(np.ceil(iw * scale)), int(np.ceil(ih * scale))))
        y = rng.integers(0, img.shape[0] - h + 1)
        x = rng.integers(0, img.shape[1] - w + 1)
        return np.ascontiguousarray(img[y:y + h, x:x + w])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w, 3), np.float32)
    for _ in range(4):  # a few oriented gratings and blobs: texture for flow and trackers
        f = rng.uniform(0.02, 0.15, 2)
        out += (np.sin(xx * f[0] + yy * f[1] + rng.uniform(0, 6.3))[..., None]
                * rng.uniform(-60, 60, 3))
    noise = cv2.GaussianBlur(rng.normal(0, 40, (h, w, 3)).astype(np.float32), (0, 0), 2)
    return np.clip(out + noise + rng.uniform(60, 200, 3), 0, 255).astype(np.uint8)


def turn_hue(rgb: np.ndarray, rng: np.random.Generator, turn: int | None = None,
             saturation: float | None = None) -> np.ndarray:
    """``rgb`` with its hue turned (by ``turn`` in OpenCV's 0-180 units, random when None)
    and its saturation scaled, so textures cut from one photo still differ in colour."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + (int(rng.integers(180)) if turn is None else turn)) % 180
    gain = rng.uniform(0.9, 1.6) if saturation is None else saturation
    hsv[..., 1] = np.clip(hsv[..., 1] * gain + 25, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def photo_pool(images_dir: Path | None, pool: str) -> list[Path]:
    """The photos textures are cut from: ``train`` three of every four, ``heldout`` the
    fourth, so held-out objects never wear a photo that training objects wear."""
    photos = _photos(images_dir)
    if pool == "all":
        return photos
    held = [p for i, p in enumerate(photos) if i % 4 == 3]
    return held if pool == "heldout" else [p for p in photos if p not in held]


def texture_source(images_dir: Path | None = None, pool: str = "all", side: int = 64,
                   category_look: bool = False):
    """``(rng, n, category=None) -> n`` RGB textures of ``side`` px for the faces of one
    object: all cut from one material (a photo of ``pool``, or a procedural pattern), each
    from another part of it, turned by a quarter turn at random, and each with its own hue.
    An object's faces share their pattern and differ in colour, so colour alone does not
    tell that two views show one object.

    By default each object draws its own material, so objects of one category share their
    shape and nothing of their look. With ``category_look`` every object of a category cuts
    its faces from that category's one material (one per category and pool), as real
    objects of a kind share a look: objects of a category then look alike in pattern, still
    not in colour (hues stay the object's own), and category becomes visible from one view."""
    photos = photo_pool(images_dir, pool)

    def material(rng: np.random.Generator) -> np.ndarray:
        source = photos if photos and rng.random() < PHOTO_SHARE else []
        return _texture(rng, source, 3 * side, 3 * side, zoom=(1.5, 5.0))

    def textures(rng: np.random.Generator, n: int, category: str | None = None) -> list[np.ndarray]:
        if category_look and category is not None:
            # crc32, not hash(): the same material in every process and run
            cloth = material(np.random.default_rng([zlib.crc32(f"{pool}/{category}".encode()), 17]))
        else:
            cloth = material(rng)
        hue, saturation = int(rng.integers(180)), rng.uniform(0.9, 1.6)
        out = []
        for _ in range(n):
            y, x = rng.integers(0, 2 * side + 1, 2)
            face = np.rot90(cloth[y:y + side, x:x + side], int(rng.integers(4)))
            turn = hue + int(rng.integers(-FACE_HUE_SPREAD, FACE_HUE_SPREAD + 1))
            out.append(turn_hue(np.ascontiguousarray(face), rng, turn, saturation))
        return out
    return textures


def generate_video(path: str | Path, seed: int = 0, n_objects: int = 2, width: int = 320,
                   height: int = 240, fps: int = 25, seconds: float = 4.0,
                   images_dir: Path | None = None, pan_px: float = 1.5) -> GroundTruth:
    """Write a synthetic video to ``path`` (H.264 in any container PyAV knows by extension)."""
    rng = np.random.default_rng(seed)
    photos = _photos(images_dir)
    n_frames = int(round(seconds * fps))
    pan = rng.uniform(-1, 1, 2)
    pan = pan / (np.linalg.norm(pan) + 1e-9) * pan_px
    margin = int(np.ceil(abs(pan).max() * n_frames)) + 2
    background = _texture(rng, photos, height + 2 * margin, width + 2 * margin)

    objects = []
    lane_w = width / n_objects
    for k in range(n_objects):
        side = int(rng.uniform(0.22, 0.3) * height)
        patch = _texture(rng, photos, side, side)
        mask = np.zeros((side, side), np.float32)
        cv2.ellipse(mask, (side // 2, side // 2), (side // 2 - 1, int(side * rng.uniform(0.42, 0.49))),
                    rng.uniform(0, 180), 0, 360, 1.0, -1)
        objects.append(dict(
            patch=patch.astype(np.float32), mask=mask,
            center=np.array([lane_w * (k + 0.5), rng.uniform(0.35, 0.65) * height]),
            velocity=rng.uniform(1.0, 2.5, 2) * rng.choice([-1, 1], 2),
            spin=rng.uniform(1.0, 3.0) * rng.choice([-1, 1]),
            scale_period=rng.uniform(2.0, 4.0) * fps))

    boxes = np.full((n_frames, n_objects, 4), np.nan, np.float32)

    def frames():
        for t in range(n_frames):
            ox = int(round(margin + pan[0] * t))
            oy = int(round(margin + pan[1] * t))
            frame = background[oy:oy + height, ox:ox + width].astype(np.float32)
            for k, obj in enumerate(objects):
                # Each object bounces inside its own lane, so objects never overlap.
                lo = np.array([lane_w * k + 42, 42])
                hi = np.array([lane_w * (k + 1) - 42, height - 42])
                c = lo + _bounce(obj["center"] + obj["velocity"] * t, lo, hi)
                side = obj["mask"].shape[0]
                scale = 1.0 + 0.15 * np.sin(2 * np.pi * t / obj["scale_period"])
                m = cv2.getRotationMatrix2D((side / 2, side / 2), obj["spin"] * t, scale)
                m[:, 2] += c - side / 2
                alpha = cv2.warpAffine(obj["mask"], m, (width, height))[..., None]
                fg = cv2.warpAffine(obj["patch"], m, (width, height))
                frame = frame * (1 - alpha) + fg * alpha
                ys, xs = np.nonzero(alpha[..., 0] > 0.5)
                if len(xs):
                    boxes[t, k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            yield np.clip(frame, 0, 255).astype(np.uint8)

    write_h264(path, frames(), fps)
    return GroundTruth(boxes=boxes, fps=float(fps), width=width, height=height,
                       objects=[{"instance": k, "category": "ellipse"} for k in range(n_objects)])


def _bounce(c: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Offset from ``lo`` of a point moving freely, reflected back and forth inside [lo, hi]."""
    span = hi - lo
    return span - np.abs((c - lo) % (2 * span) - span)


def generate_dataset(out_dir: str | Path, n_videos: int = 4, seed: int = 0,
                     images_dir: Path | None = None, kind: str = "flat", **kwargs) -> list[Path]:
    """``n_videos`` synthetic videos of ``kind`` (flat or solids) in ``out_dir``, each with
    ``<name>.truth.json`` beside it."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of synthetic video {kind!r}; choose from {KINDS}")
    if kind == "solids":
        from .scenes import generate_solids_video as generate
    else:
        generate = generate_video
    out_dir = Path(out_dir)
    paths = []
    for i in range(n_videos):
        path = out_dir / f"{'solids' if kind == 'solids' else 'synthetic'}_{seed}_{i:03d}.mp4"
        truth = generate(path, seed=seed * 1000 + i, images_dir=images_dir, **kwargs)
        path.with_suffix(".truth.json").write_text(json.dumps(truth.to_json()))
        paths.append(path)
    return paths


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (4,) against boxes ``b`` (n, 4); NaN boxes give 0."""
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.nan_to_num(inter / np.maximum(union, 1e-9), nan=0.0)


def track_quality(result: VideoResult, truth: GroundTruth, min_iou: float = 0.5) -> dict:
    """Precision: of all crop pairs within one track, the share whose two crops both lie on
    the same ground-truth object (IoU >= min_iou). Recall: the share of objects with at least
    one such correct pair."""
    pairs = correct = 0
    found: set[int] = set()
    for track in result.tracks:
        labels = []
        for crop in track.crops:
            ious = iou(np.asarray(crop.box, np.float32), truth.boxes[crop.frame_index])
            best = int(np.argmax(ious))
            labels.append(best if ious[best] >= min_iou else -1)
        labels = np.asarray(labels)
        same = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
        upper = np.triu_indices(len(labels), 1)
        pairs += len(upper[0])
        correct += int(same[upper].sum())
        found |= {int(lab) for lab in labels[upper[0]][same[upper]]}
    n_objects = truth.boxes.shape[1]
    return {"precision": correct / pairs if pairs else 0.0,
            "recall": len(found) / n_objects if n_objects else 0.0,
            "pairs": pairs, "tracks": len(result.tracks)}
