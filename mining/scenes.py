"""Videos of textured solids (``vidmine-mine synth --kind solids``): objects of six
categories move over a textured background the camera pans across, turn out of plane so
that other faces come into view, occlude each other, and are lit by a light that moves;
each video has its own light colour and colour cast.

Objects come from two pools that never meet: ``train`` (instance ids from 0, textures
from three of every four photos) and ``heldout`` (ids from ``HELDOUT_BASE``, the other
photos), so invariance sets rendered from held-out objects (``mining.evalsets``) show
objects that no training video contains. Within a pool an instance (its shape and
textures) follows from its id alone, so one object appears in several videos.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .render import Camera, Light, Pose, Solid, make_solid, render_frame, rotation, visible_boxes
from .synthetic import GroundTruth, _bounce, _texture, photo_pool, texture_source, turn_hue, write_h264

HELDOUT_BASE = 1_000_000
POOLS = ("train", "heldout")
SOLIDS_PER_VIDEO = 3


def pool_object(pool: str, k: int, images_dir: Path | None = None,
                category: str | None = None, category_look: bool = False) -> Solid:
    """Instance ``k`` of ``pool`` (its category drawn from its id unless given); with
    ``category_look`` it wears its category's material (``synthetic.texture_source``)."""
    if pool not in POOLS:
        raise ValueError(f"unknown object pool {pool!r}; choose from {POOLS}")
    base = HELDOUT_BASE if pool == "heldout" else 0
    return make_solid(base + k, texture_source(images_dir, pool, category_look=category_look),
                      category)


def light_direction(azimuth: float, elevation: float) -> np.ndarray:
    """Unit vector towards a light ``azimuth`` radians right of the camera axis and
    ``elevation`` above it (the light sits on the camera's side of the objects)."""
    return np.array([math.sin(azimuth) * math.cos(elevation), -math.sin(elevation),
                     -math.cos(azimuth) * math.cos(elevation)])


def random_light(rng: np.random.Generator) -> tuple[tuple, np.ndarray]:
    """A light colour (white half the time, else tinted) and a camera colour cast."""
    colour = (1.0, 1.0, 1.0) if rng.random() < 0.5 else tuple(1 - rng.uniform(0, 0.35, 3))
    colour = tuple(float(c) / max(colour) for c in colour)
    return colour, np.exp(rng.normal(0, 0.08, 3)).astype(np.float32)


def generate_solids_video(path: str | Path, seed: int = 0, n_objects: int = SOLIDS_PER_VIDEO,
                          width: int = 320, height: int = 240, fps: int = 25, seconds: float = 4.0,
                          images_dir: Path | None = None, pool: str = "train",
                          pool_size: int = 300, pan_px: float = 1.2,
                          category_look: bool = False) -> GroundTruth:
    """Write a video of ``n_objects`` solids from ``pool`` (H.264) and return its truth;
    ``category_look``: objects of a category share a material (``pool_object``)."""
    if pool_size < n_objects:
        raise ValueError(f"a pool of {pool_size} solids cannot fill a video of {n_objects}")
    rng = np.random.default_rng([seed, 3])
    n_frames = int(round(seconds * fps))
    cam = Camera(width, height)
    f = cam.focal
    ids = rng.choice(pool_size, n_objects, replace=False)
    solids = [pool_object(pool, int(k), images_dir, category_look=category_look) for k in ids]

    pan = rng.uniform(-1, 1, 2)
    pan = pan / (np.linalg.norm(pan) + 1e-9) * pan_px
    margin = int(np.ceil(abs(pan).max() * n_frames)) + 2
    photos = photo_pool(images_dir, pool)
    background = turn_hue(_texture(rng, photos, height + 2 * margin, width + 2 * margin), rng)
    background = background.astype(np.float32) / 255.0

    lane = width / n_objects
    plans = []
    for k, solid in enumerate(solids):
        depth = rng.uniform(5.0, 8.0)
        r_px = rng.uniform(0.13, 0.19) * height
        lo = np.array([max(r_px, lane * k - 0.25 * lane + r_px), r_px])
        hi = np.array([min(width - r_px, lane * (k + 1) + 0.25 * lane - r_px), height - r_px])
        hi = np.maximum(hi, lo + 1)
        plans.append(dict(
            depth=depth, scale=r_px * depth / (f * solid.radius), lo=lo, hi=hi,
            start=np.array([lane * (k + 0.5), rng.uniform(0.35, 0.65) * height]),
            velocity=rng.uniform(0.5, 1.5, 2) * rng.choice([-1, 1], 2),
            rotation=rotation(rng.normal(size=3), rng.uniform(0, 2 * math.pi)),
            axis=rng.normal(size=3),
            turn=math.radians(rng.uniform(150, 330)) / n_frames * rng.choice([-1, 1])))
    azimuth = math.radians(rng.uniform(-50, 50))
    sweep = math.radians(rng.uniform(40, 100)) / n_frames * rng.choice([-1, 1])
    elevation = math.radians(rng.uniform(25, 55))
    light_colour, cast = random_light(rng)

    boxes = np.full((n_frames, n_objects, 4), np.nan, np.float32)
    poses = np.zeros((n_frames, n_objects, 12), np.float32)

    def frames():
        for t in range(n_frames):
            ox, oy = int(round(margin + pan[0] * t)), int(round(margin + pan[1] * t))
            back = background[oy:oy + height, ox:ox + width]
            frame_poses = []
            for k, p in enumerate(plans):
                centre = p["lo"] + _bounce(p["start"] + p["velocity"] * t, p["lo"], p["hi"])
                position = np.array([(centre[0] - width / 2) / f * p["depth"],
                                     (centre[1] - height / 2) / f * p["depth"], p["depth"]])
                turned = rotation(p["axis"], p["turn"] * t) @ p["rotation"]
                frame_poses.append(Pose(position, turned, p["scale"]))
                poses[t, k] = np.r_[turned.ravel(), position]
            light = Light(light_direction(azimuth + sweep * t, elevation), light_colour)
            frame, id_map = render_frame(back, solids, frame_poses, cam, light)
            boxes[t] = visible_boxes(id_map, n_objects)
            yield (np.clip(frame * cast, 0, 1) * 255).astype(np.uint8)

    write_h264(path, frames(), fps)
    return GroundTruth(boxes=boxes, fps=float(fps), width=width, height=height, poses=poses,
                       objects=[{"instance": s.object_id, "category": s.category} for s in solids])


