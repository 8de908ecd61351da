"""Image descriptors that learn nothing: the hand-crafted descriptor graph embeds with
before a network is trained, and the floors every evaluation reports beside the networks
(a measure that these win measures nothing). RGB uint8 images in, one row per image out.

The hand-crafted descriptor resizes each image to 64x64 and concatenates

* a colour histogram in HSV: 12 hue x 4 saturation x 4 value bins (192), as frequencies,
  square-rooted (the Hellinger map, so dot products compare distributions fairly);
* a HOG-like gradient histogram: 9 unsigned orientation bins in each of 4x4 cells of 16x16
  pixels (144), magnitude-weighted, each cell L2-normalised (robust to contrast changes).

Both halves have unit norm and weigh the same; the 336-d result is L2-normalised.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def handcrafted_descriptor(images: list[np.ndarray], size: int = 64) -> np.ndarray:
    """(len(images), 336) float32 descriptors of RGB uint8 images (see the module doc)."""
    n = len(images)
    batch = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])
    tall = batch.reshape(n * size, size, 3)  # one OpenCV call converts the whole batch
    hsv = cv2.cvtColor(tall, cv2.COLOR_RGB2HSV).reshape(n, size * size, 3).astype(np.int64)
    colour_bin = (hsv[..., 0] * 12 // 180) * 16 + (hsv[..., 1] * 4 // 256) * 4 + hsv[..., 2] * 4 // 256
    colour = np.bincount((np.arange(n)[:, None] * 192 + colour_bin).ravel(),
                         minlength=n * 192).reshape(n, 192).astype(np.float32)
    colour = np.sqrt(colour / (size * size))

    gray = cv2.cvtColor(tall, cv2.COLOR_RGB2GRAY).reshape(n, size, size).astype(np.float32)
    gx = np.zeros_like(gray)
    gy = np.zeros_like(gray)
    gx[:, :, 1:-1] = gray[:, :, 2:] - gray[:, :, :-2]
    gy[:, 1:-1, :] = gray[:, 2:, :] - gray[:, :-2, :]
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    orient = np.minimum((angle / np.pi * 9).astype(np.int64), 8)
    cell_px = size // 4
    yy, xx = np.mgrid[0:size, 0:size]
    cell = (yy // cell_px) * 4 + xx // cell_px
    index = np.arange(n)[:, None, None] * 144 + cell[None] * 9 + orient
    grad = np.bincount(index.ravel(), weights=magnitude.ravel(),
                       minlength=n * 144).reshape(n, 16, 9).astype(np.float32)
    grad = l2_normalize(l2_normalize(grad).reshape(n, 144))
    return l2_normalize(np.concatenate([colour, grad], axis=1)).astype(np.float32)


def colour_histogram(images: Sequence[np.ndarray], bins: int = 8) -> np.ndarray:
    """(n, bins^3) RGB colour histograms, as frequencies."""
    out = np.empty((len(images), bins ** 3), np.float32)
    for i, im in enumerate(images):   # a loop over images; each histogram is one bincount
        q = (im.reshape(-1, 3).astype(np.int64) * bins) // 256
        code = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
        out[i] = np.bincount(code, minlength=bins ** 3) / len(code)
    return out


def raw_pixels(images: Sequence[np.ndarray], side: int = 8) -> np.ndarray:
    """(n, side * side * 3) pixels of each image shrunk to ``side`` x ``side``, in 0-1."""
    return np.stack([cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA).ravel()
                     for im in images]).astype(np.float32) / 255.0


FLOORS = {"colour-histogram": colour_histogram, "raw-pixels": raw_pixels,
          "handcrafted": handcrafted_descriptor}
