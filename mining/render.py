"""Textured solids rendered in 3D with numpy and OpenCV: synthetic video whose objects turn
out of plane, so that other sides come into view, under a moving light.

Objects are built from analytic primitives (box, sphere, cylinder, cone) in six categories,
two of them composites. A pixel's ray is intersected with each primitive in the
primitive's own frame (a quadratic or the slab test, vectorized over the pixels of the
object's screen box), which gives its depth, surface normal and texture coordinates; a
z-buffer composes the objects, so they occlude each other. Every face (box), sector
(sphere) or part (sides, caps) has its own texture, so a turn changes what the object
looks like. Shading is Lambertian under a directional light of any colour.

The camera is a pinhole at ``position`` looking down +z (x right, y down), so a ray's
parameter is its depth. One 320x240 frame with three objects renders in a few ms on one
core (``benchmarks/render.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

CATEGORIES = ("box", "sphere", "cylinder", "cone", "dumbbell", "lamp")
TEXTURES_OF = {"box": 6, "sphere": 4, "cylinder": 4, "cone": 3}
TEXTURE_SIDE = 64
_OTHER_AXES = np.array([[1, 2], [0, 2], [0, 1]])


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, np.float64)
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


@dataclass
class Primitive:
    kind: str                 # box | sphere | cylinder | cone
    size: tuple               # box: half extents; sphere: (r,); cylinder, cone: (r, half height)
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))   # in the object's frame
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))   # primitive -> object
    first_texture: int = 0    # its textures' first slot in the object's atlas

    @property
    def radius(self) -> float:
        """Radius of a sphere around the primitive's centre that contains it."""
        if self.kind == "box":
            return float(np.linalg.norm(self.size))
        if self.kind == "sphere":
            return float(self.size[0])
        return float(math.hypot(*self.size))


@dataclass
class Solid:
    """One object instance: its primitives and their textures, stacked into one atlas."""
    object_id: int
    category: str
    primitives: list[Primitive]
    atlas: np.ndarray         # (textures * TEXTURE_SIDE, TEXTURE_SIDE, 3) float32 albedo, 0-1
    tilt: np.ndarray = field(default_factory=lambda: np.eye(3))  # the instance's own turn

    @property
    def radius(self) -> float:
        return max(float(np.linalg.norm(p.offset)) + p.radius for p in self.primitives)


def _parts(category: str, rng: np.random.Generator) -> list[Primitive]:
    """The primitives of one instance of ``category``, sized to a radius of about 1."""
    u = rng.uniform
    if category == "box":
        return [Primitive("box", tuple(u(0.45, 0.85, 3)))]
    if category == "sphere":
        return [Primitive("sphere", (u(0.75, 0.95),))]
    if category == "cylinder":
        return [Primitive("cylinder", (u(0.4, 0.7), u(0.55, 0.85)))]
    if category == "cone":
        return [Primitive("cone", (u(0.55, 0.8), u(0.6, 0.85)))]
    if category == "dumbbell":
        r, reach = u(0.32, 0.42), u(0.55, 0.7)
        return [Primitive("sphere", (r,), np.array([0, 0, -reach])),
                Primitive("cylinder", (u(0.1, 0.16), reach)),
                Primitive("sphere", (r,), np.array([0, 0, reach]))]
    if category == "lamp":
        return [Primitive("box", (u(0.4, 0.55), u(0.4, 0.55), 0.08), np.array([0, 0, -0.8])),
                Primitive("cylinder", (u(0.08, 0.13), 0.4), np.array([0, 0, -0.35])),
                Primitive("cone", (u(0.5, 0.7), u(0.3, 0.42)), np.array([0, 0, 0.35]))]
    raise ValueError(f"unknown category {category!r}; choose from {CATEGORIES}")


def make_solid(object_id: int, textures, category: str | None = None) -> Solid:
    """Instance ``object_id`` (its shape and textures follow from the id alone). ``textures``
    is a callable ``(rng, n, category) -> list of n RGB uint8 images``
    (``synthetic.texture_source``); a category is drawn when not given."""
    rng = np.random.default_rng([object_id, 7])
    category = category or CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    parts = _parts(category, rng)  # built along z: its axis (cylinder, cone, ...) is z
    tilt = rotation(rng.normal(size=3), rng.uniform(0, 2 * math.pi))
    n_tex = 0
    for p in parts:
        p.offset = tilt @ p.offset
        p.rotation = tilt @ p.rotation
        p.first_texture = n_tex
        n_tex += TEXTURES_OF[p.kind]
    images = textures(rng, n_tex, category)
    atlas = np.concatenate([cv2.resize(im, (TEXTURE_SIDE, TEXTURE_SIDE), interpolation=cv2.INTER_AREA)
                            for im in images]).astype(np.float32) / 255.0
    return Solid(object_id, category, parts, atlas, tilt)


# -- rays and surfaces, in a primitive's frame ------------------------------------------------
# ``_hit_*(o, d, size)``: ray parameter t of the first hit of rays o + t d (o: (3,), d: (M, 3)),
# inf where a ray misses. ``_surface_*(q, size)``: at hit points q (K, 3), the texture slot,
# texture coordinates u, v in [0, 1] and the outward normal. Surfaces are evaluated only where
# a primitive is the nearest hit, which is a fraction of the rays of its screen box.
_EDGE = 1e-4  # relative tolerance for telling a cap from a side at a hit point


def _safe(x):
    return np.where(np.abs(x) < 1e-9, np.float32(1e-9), x)


def _hit_box(o, d, half):
    half = np.asarray(half, np.float32)
    d = _safe(d)
    t1, t2 = (-half - o) / d, (half - o) / d
    t_in = np.minimum(t1, t2).max(1)
    t_out = np.maximum(t1, t2).min(1)
    return np.where((t_in <= t_out) & (t_in > 0), t_in, np.inf)


def _surface_box(q, half):
    half = np.asarray(half, np.float32)
    rel = q / half
    axis = np.argmax(np.abs(rel), 1)
    rows = np.arange(len(q))
    positive = rel[rows, axis] > 0
    other = _OTHER_AXES[axis]
    u = (rel[rows, other[:, 0]] + 1) / 2
    v = (rel[rows, other[:, 1]] + 1) / 2
    normal = np.zeros_like(q)
    normal[rows, axis] = np.where(positive, 1.0, -1.0)
    return 2 * axis + positive, u, v, normal


def _hit_sphere(o, d, size):
    r = size[0]
    a = np.einsum("ij,ij->i", d, d)
    b = d @ o
    disc = b * b - a * (o @ o - r * r)
    t = (-b - np.sqrt(np.maximum(disc, 0))) / a
    return np.where((disc >= 0) & (t > 0), t, np.inf)


def _surface_sphere(q, size):
    r = size[0]
    angle = (np.arctan2(q[:, 1], q[:, 0]) + math.pi) / (2 * math.pi) * 4   # four sectors
    sector = np.minimum(angle.astype(np.int64), 3)
    v = np.arccos(np.clip(q[:, 2] / r, -1, 1)) / math.pi
    return sector, angle - sector, v, q / r


def _side_halves(q):
    """Texture slot (0 or 1: the two halves around the axis) and u along the half."""
    angle = (np.arctan2(q[:, 1], q[:, 0]) + math.pi) / math.pi
    half = np.minimum(angle.astype(np.int64), 1)
    return half, angle - half


def _hit_cylinder(o, d, size):
    r, h = size
    a = _safe(d[:, 0] ** 2 + d[:, 1] ** 2)
    b = o[0] * d[:, 0] + o[1] * d[:, 1]
    disc = b * b - a * (o[0] ** 2 + o[1] ** 2 - r * r)
    t = (-b - np.sqrt(np.maximum(disc, 0))) / a
    z = o[2] + t * d[:, 2]
    best = np.where((disc >= 0) & (t > 0) & (np.abs(z) <= h), t, np.inf)
    dz = _safe(d[:, 2])
    for cap in (h, -h):
        t = (cap - o[2]) / dz
        x, y = o[0] + t * d[:, 0], o[1] + t * d[:, 1]
        best = np.where((t > 0) & (x * x + y * y <= r * r) & (t < best), t, best)
    return best


def _surface_cylinder(q, size):
    r, h = size
    top, bottom = q[:, 2] >= h * (1 - _EDGE), q[:, 2] <= -h * (1 - _EDGE)
    half, u_side = _side_halves(q)
    cap = top | bottom
    slot = np.where(top, 2, np.where(bottom, 3, half))      # 0, 1 sides; 2 top; 3 bottom
    u = np.where(cap, (q[:, 0] / r + 1) / 2, u_side)
    v = np.where(cap, (q[:, 1] / r + 1) / 2, (q[:, 2] / h + 1) / 2)
    normal = np.stack([q[:, 0] / r, q[:, 1] / r, np.zeros(len(q), q.dtype)], 1)
    normal[top], normal[bottom] = (0, 0, 1), (0, 0, -1)
    return slot, u, v, normal


def _hit_cone(o, d, size):
    """Apex at z = +h, base of radius r at z = -h."""
    r, h = size
    k2 = (r / (2 * h)) ** 2
    w0 = h - o[2]
    a = _safe(d[:, 0] ** 2 + d[:, 1] ** 2 - k2 * d[:, 2] ** 2)
    b = o[0] * d[:, 0] + o[1] * d[:, 1] + k2 * w0 * d[:, 2]
    disc = b * b - a * (o[0] ** 2 + o[1] ** 2 - k2 * w0 ** 2)
    root = np.sqrt(np.maximum(disc, 0))
    best = np.full(len(d), np.inf, np.float32)
    for t in ((-b - root) / a, (-b + root) / a):
        z = o[2] + t * d[:, 2]
        best = np.where((disc >= 0) & (t > 0) & (z >= -h) & (z <= h) & (t < best), t, best)
    t = (-h - o[2]) / _safe(d[:, 2])
    x, y = o[0] + t * d[:, 0], o[1] + t * d[:, 1]
    return np.where((t > 0) & (x * x + y * y <= r * r) & (t < best), t, best)


def _surface_cone(q, size):
    r, h = size
    k2 = (r / (2 * h)) ** 2
    base = q[:, 2] <= -h * (1 - _EDGE)
    half, u_side = _side_halves(q)
    slot = np.where(base, 2, half)
    u = np.where(base, (q[:, 0] / r + 1) / 2, u_side)
    v = np.where(base, (q[:, 1] / r + 1) / 2, (h - q[:, 2]) / (2 * h))
    normal = np.stack([q[:, 0], q[:, 1], k2 * (h - q[:, 2])], 1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    normal[base] = (0, 0, -1)
    return slot, u, v, normal


_HIT = {"box": _hit_box, "sphere": _hit_sphere, "cylinder": _hit_cylinder, "cone": _hit_cone}
_SURFACE = {"box": _surface_box, "sphere": _surface_sphere, "cylinder": _surface_cylinder,
            "cone": _surface_cone}


@dataclass
class Pose:
    position: np.ndarray      # world (camera at ``Camera.position`` looks down +z)
    rotation: np.ndarray      # 3x3, object -> world
    scale: float = 1.0


@dataclass
class Light:
    direction: np.ndarray     # towards the light, world
    colour: tuple = (1.0, 1.0, 1.0)
    ambient: float = 0.35


@dataclass
class Camera:
    width: int
    height: int
    fov_deg: float = 50.0
    position: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @property
    def focal(self) -> float:
        return self.width / (2 * math.tan(math.radians(self.fov_deg) / 2))

    def project(self, point: np.ndarray) -> np.ndarray:
        rel = point - self.position
        return np.array([self.focal * rel[0] / rel[2] + self.width / 2,
                         self.focal * rel[1] / rel[2] + self.height / 2])


def _screen_box(solid: Solid, pose: Pose, cam: Camera) -> tuple[int, int, int, int] | None:
    """Pixel box (x0, y0, x1, y1) that holds the object's projection, clipped; None when
    the object is behind the camera or off screen."""
    rel = pose.position - cam.position
    radius = solid.radius * pose.scale
    if rel[2] - radius <= 0.05:
        return None
    centre = cam.project(pose.position)
    reach = cam.focal * radius / math.sqrt(max(rel[2] ** 2 - radius ** 2, 1e-6)) + 2
    x0, y0 = max(0, int(centre[0] - reach)), max(0, int(centre[1] - reach))
    x1, y1 = min(cam.width, int(centre[0] + reach) + 1), min(cam.height, int(centre[1] + reach) + 1)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def render_solid(solid: Solid, pose: Pose, cam: Camera, light: Light):
    """(screen box, depth, colour) of one object: depth (h, w) is inf off the object,
    colour (h, w, 3) float32 shaded albedo; None when the object is not in view."""
    box = _screen_box(solid, pose, cam)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    f = np.float32(cam.focal)
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cam.width / 2) / f
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cam.height / 2) / f
    rays = np.empty((h, w, 3), np.float32)
    rays[..., 0], rays[..., 1], rays[..., 2] = xs[None, :], ys[:, None], 1.0
    rays = rays.reshape(-1, 3)
    # into the object's frame: the ray parameter stays the depth
    rot = pose.rotation.astype(np.float32)
    origin = (rot.T @ (cam.position - pose.position) / pose.scale).astype(np.float32)
    dirs = rays @ (rot / np.float32(pose.scale))
    frames = [(p.rotation.T.astype(np.float32) @ (origin - p.offset).astype(np.float32),
               dirs @ p.rotation.astype(np.float32)) for p in solid.primitives]
    hits = np.stack([_HIT[p.kind](o, d, p.size) for p, (o, d) in zip(solid.primitives, frames)])
    nearest = np.argmin(hits, 0)
    depth = hits.min(0)
    slot = np.zeros(h * w, np.int64)
    u = np.zeros(h * w, np.float32)
    v = np.zeros(h * w, np.float32)
    normal = np.zeros((h * w, 3), np.float32)
    seen = np.isfinite(depth)
    for k, (prim, (o, d)) in enumerate(zip(solid.primitives, frames)):
        sel = np.flatnonzero(seen & (nearest == k))
        if len(sel) == 0:
            continue
        q = o + depth[sel, None] * d[sel]
        s, u[sel], v[sel], n = _SURFACE[prim.kind](q, prim.size)
        slot[sel] = s + prim.first_texture
        normal[sel] = n @ prim.rotation.T.astype(np.float32)
    side = TEXTURE_SIDE
    map_x = (np.clip(u, 0, 1) * (side - 1)).reshape(h, w)
    map_y = (slot * side + np.clip(v, 0, 1) * (side - 1)).astype(np.float32).reshape(h, w)
    albedo = cv2.remap(solid.atlas, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    lambert = np.clip(normal @ (rot.T @ light.direction).astype(np.float32), 0, None)
    shade = (light.ambient + (1 - light.ambient) * lambert.reshape(h, w, 1)) \
        * np.asarray(light.colour, np.float32)
    return box, depth.reshape(h, w), albedo * shade


def render_frame(background: np.ndarray, solids: list[Solid], poses: list[Pose], cam: Camera,
                 light: Light) -> tuple[np.ndarray, np.ndarray]:
    """Compose the objects over ``background`` (float32 HxWx3, 0-1) with a z-buffer.
    Returns the frame and the id map (index into ``solids`` of the visible object, -1 for
    background)."""
    frame = background.copy()
    zbuf = np.full(frame.shape[:2], np.inf)
    ids = np.full(frame.shape[:2], -1, np.int16)
    for i, (solid, pose) in enumerate(zip(solids, poses)):
        drawn = render_solid(solid, pose, cam, light)
        if drawn is None:
            continue
        (x0, y0, x1, y1), depth, colour = drawn
        near = depth < zbuf[y0:y1, x0:x1]
        frame[y0:y1, x0:x1][near] = colour[near]
        zbuf[y0:y1, x0:x1][near] = depth[near]
        ids[y0:y1, x0:x1][near] = i
    return frame, ids


def visible_boxes(ids: np.ndarray, n: int) -> np.ndarray:
    """(n, 4) box x0, y0, x1, y1 around each object's visible pixels; NaN when unseen."""
    boxes = np.full((n, 4), np.nan, np.float32)
    for i in range(n):   # a loop over objects; each test is one vectorized pass
        rows = np.flatnonzero((ids == i).any(1))
        if len(rows):
            cols = np.flatnonzero((ids[rows[0]:rows[-1] + 1] == i).any(0))
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes
