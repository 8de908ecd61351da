"""Invariance sets rendered from held-out solids (``vidmine-mine synth-sets OUT``): images
of objects that no training video contains, under one controlled change per set, for
Top-K RIS and for retrieval of object identity.

* ``viewpoint`` (ALOI-like): each object on a turntable, 8 azimuths x 3 elevations, on a
  plain background under a fixed white light. One set per object; the object is its class.
* ``illumination``: each object in one pose, the light moved all around it (behind too),
  harder or softer, white to strongly tinted. One set per object; the object is its class.
* ``occlusion`` (GOT-10k-like): each object, moving a little (azimuth +-20, elevation
  +-10 degrees) as in a tracked sequence, with textured occluders drawn over 20-60 % of its
  box. One set per object; the object is its class.
* ``instance`` (Pascal3D+-like): different objects of one category seen from one azimuth
  (+-15 degrees), standing upright. One set per (category, azimuth); the category is the
  class.
* ``retrieval``: each object in three renders that differ in background, light, colour cast
  and pose, six views each. A query's relevant answers are the same object in another
  render; its own render's views are left out of the ranking.

Each image is the object's visible box with 10 % context on each side (as mined crops
have), at most ``SIDE`` px, written as JPEG to ``OUT/<kind>/<class>/<set>/<n>.jpg``
(``OUT/retrieval/<object>/<render>/<n>.jpg``), with ``OUT/manifest.json`` describing it.
``vidmine-eval ris --sets rendered:OUT`` and ``vidmine-eval retrieval --data OUT`` read it.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np

from vidmine.images import resize_long_side, write_image

from .render import CATEGORIES, Camera, Light, Pose, Solid, render_frame, rotation
from .scenes import light_direction, pool_object, random_light
from .synthetic import _texture, photo_pool, turn_hue

SIDE = 96            # long side of a stored image
RENDER = 128         # side of the square render
KINDS = ("viewpoint", "illumination", "occlusion", "instance")
AZIMUTHS = 8
ELEVATIONS = (-20.0, 10.0, 35.0)
PLAIN = (0.5, 0.5, 0.5)
FORMAT = "vidmine-rendered-sets-v1"


def _view(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Rotation that turns an object by ``azimuth`` about the vertical axis (the image's y)
    and tilts it by ``elevation`` towards the camera."""
    return rotation([1, 0, 0], math.radians(elevation_deg)) @ rotation([0, 1, 0], math.radians(azimuth_deg))


class Studio:
    """Renders one held-out object at a time, centred and filling most of the frame."""

    def __init__(self, seed: int, images_dir: Path | None):
        self.cam = Camera(RENDER, RENDER, fov_deg=40.0)
        self.rng = np.random.default_rng([seed, 11])
        self.photos = photo_pool(images_dir, "heldout")

    def plain(self, colour=PLAIN) -> np.ndarray:
        return np.broadcast_to(np.asarray(colour, np.float32), (RENDER, RENDER, 3)).copy()

    def textured(self) -> np.ndarray:
        tex = turn_hue(_texture(self.rng, self.photos, RENDER, RENDER), self.rng)
        return tex.astype(np.float32) / 255.0

    def shoot(self, solid: Solid, orientation: np.ndarray, light: Light,
              background: np.ndarray, cast=(1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 crop of the object with context, its visible box in the crop)."""
        depth = 4.0
        scale = 0.36 * RENDER * depth / (self.cam.focal * solid.radius)
        pose = Pose(np.array([0.0, 0.0, depth]), orientation, scale)
        frame, ids = render_frame(background, [solid], [pose], self.cam, light)
        frame = (np.clip(frame * np.asarray(cast, np.float32), 0, 1) * 255).astype(np.uint8)
        ys, xs = np.nonzero(ids == 0)
        if len(xs) == 0:
            raise RuntimeError(f"object {solid.object_id} rendered out of view")
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        mx, my = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
        cx0, cy0 = max(0, int(x0 - mx)), max(0, int(y0 - my))
        cx1, cy1 = min(RENDER, int(math.ceil(x1 + mx))), min(RENDER, int(math.ceil(y1 + my)))
        crop, scale_back = resize_long_side(frame[cy0:cy1, cx0:cx1], SIDE)
        box = np.array([x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0], np.float64) * scale_back
        return crop, box

    def occlude(self, img: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Textured rectangles or ellipses over 15-50 % of the object's box."""
        out = img.copy()
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        target = self.rng.uniform(0.2, 0.6) * bw * bh
        for part in range(int(self.rng.integers(1, 3))):
            area = target / (part + 1)
            aspect = self.rng.uniform(0.5, 2.0)
            w = min(bw, math.sqrt(area * aspect))
            h = min(bh, area / max(w, 1))
            cx = self.rng.uniform(x0 + w / 2, x1 - w / 2 + 1e-6)
            cy = self.rng.uniform(y0 + h / 2, y1 - h / 2 + 1e-6)
            mask = np.zeros(img.shape[:2], np.uint8)
            if self.rng.random() < 0.5:
                cv2.rectangle(mask, (int(cx - w / 2), int(cy - h / 2)),
                              (int(cx + w / 2), int(cy + h / 2)), 1, -1)
            else:
                cv2.ellipse(mask, (int(cx), int(cy)), (max(1, int(w / 2)), max(1, int(h / 2))),
                            self.rng.uniform(0, 180), 0, 360, 1, -1)
            texture = turn_hue(_texture(self.rng, self.photos, *img.shape[:2]), self.rng)
            out[mask > 0] = texture[mask > 0]
        return out


def held_out_objects(per_category: int, images_dir: Path | None,
                     category_look: bool = False) -> list[Solid]:
    """``per_category`` held-out instances of every category (ids 0, 1, ... of the pool)."""
    return [pool_object("heldout", k, images_dir, CATEGORIES[k % len(CATEGORIES)], category_look)
            for k in range(per_category * len(CATEGORIES))]


def _base_orientation(solid: Solid) -> np.ndarray:
    rng = np.random.default_rng([solid.object_id, 13])
    return rotation(rng.normal(size=3), rng.uniform(0, 2 * math.pi))


def render_sets(out: str | Path, per_category: int = 8, seed: int = 0,
                images_dir: Path | None = None, renders: int = 3, views: int = 6,
                category_look: bool = False) -> dict:
    """Write every set under ``out`` (replacing what is there); return the manifest.
    ``category_look``: objects of a category share a material, as in training videos
    rendered with it (``synthetic.texture_source``)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    studio = Studio(seed, images_dir)
    solids = held_out_objects(per_category, images_dir, category_look)
    fixed_light = Light(light_direction(math.radians(-30), math.radians(40)))
    counts: dict[str, dict] = {}

    def save(kind: str, cls: str, group: str, n: int, img: np.ndarray) -> None:
        write_image(out / kind / cls / group / f"{n:02d}.jpg", img)
        c = counts.setdefault(kind, {"images": 0, "sets": set(), "classes": set()})
        c["images"] += 1
        c["sets"].add((cls, group))
        c["classes"].add(cls)

    for solid in solids:
        name = f"{solid.category}-{solid.object_id}"
        base = _base_orientation(solid)
        n = 0
        for elevation in ELEVATIONS:
            for a in range(AZIMUTHS):
                img, _ = studio.shoot(solid, _view(360 * a / AZIMUTHS, elevation) @ base,
                                      fixed_light, studio.plain())
                save("viewpoint", name, "turntable", n, img)
                n += 1
        pose = _view(30, 10) @ base
        for n in range(12):
            light = Light(light_direction(math.radians(studio.rng.uniform(-150, 150)),
                                          math.radians(studio.rng.uniform(-20, 80))),
                          _tint(studio.rng), ambient=float(studio.rng.uniform(0.1, 0.4)))
            img, _ = studio.shoot(solid, pose, light, studio.plain())
            save("illumination", name, "lights", n, img)
        for n in range(12):  # as in a tracked sequence, the object also moves a little
            img, box = studio.shoot(solid, _jitter(studio.rng, 20, 10) @ pose, fixed_light,
                                    studio.plain())
            save("occlusion", name, "occluded", n, studio.occlude(img, box))
        for r in range(renders):
            background = studio.textured()
            colour, cast = random_light(studio.rng)
            light = Light(light_direction(math.radians(studio.rng.uniform(-60, 60)),
                                          math.radians(studio.rng.uniform(15, 60))), colour)
            for n in range(views):
                view = _view(studio.rng.uniform(0, 360), studio.rng.uniform(-20, 35)) @ base
                img, _ = studio.shoot(solid, view, light, background, cast)
                save("retrieval", name, f"render{r}", n, img)
    for category in CATEGORIES:
        members = [s for s in solids if s.category == category]
        for b in range(4):
            for n, solid in enumerate(members):
                view = _jitter(studio.rng, 15, 10) @ _view(90 * b + 20, 10) @ _upright(solid)
                img, _ = studio.shoot(solid, view, fixed_light, studio.plain())
                save("instance", category, f"azimuth{90 * b + 20:03d}", n, img)
    manifest = {"format": FORMAT, "seed": seed, "objects_per_category": per_category,
                "category_look": category_look,
                "objects": [{"instance": s.object_id, "category": s.category} for s in solids],
                "kinds": {k: {"path": k, "images": c["images"], "sets": len(c["sets"]),
                              "classes": len(c["classes"])} for k, c in counts.items()
                          if k != "retrieval"},
                "retrieval": {"path": "retrieval", "images": counts["retrieval"]["images"],
                              "objects": len(solids), "renders": renders, "views": views}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _jitter(rng: np.random.Generator, azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    return _view(rng.uniform(-azimuth_deg, azimuth_deg), rng.uniform(-elevation_deg, elevation_deg))


def _tint(rng: np.random.Generator) -> tuple:
    """A light colour, from white to strongly tinted."""
    colour = 1 - rng.uniform(0, 0.7, 3) * rng.uniform(0, 1)
    return tuple(float(c) / float(colour.max()) for c in colour)


def _upright(solid: Solid) -> np.ndarray:
    """The instance turned back from its own tilt and stood up (its axis vertical), so every
    instance of a category is seen in one canonical pose: an instance set varies the
    instance, not the viewpoint."""
    return rotation([1, 0, 0], math.pi / 2) @ solid.tilt.T
