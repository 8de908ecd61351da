"""Pooled features of a trunk: the one way vidmine embeds images with a network, shared by
graph embedding (inter-instance edges) and evaluation (RIS, retrieval, probes), so both see
the same features of the same checkpoint."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from vidmine.device import pick_device
from vidmine.images import IMAGENET_MEAN, IMAGENET_STD, load_rgb
from vidmine.progress import progress_bar

from .backbones import Trunk


def to_batch(images: Sequence, size: int) -> torch.Tensor:
    """RGB arrays or image paths -> a normalised float [N, 3, size, size] tensor. INTER_AREA
    averages, so large crops shrink without aliasing."""
    arr = np.stack([cv2.resize(load_rgb(im), (size, size), interpolation=cv2.INTER_AREA)
                    for im in images]).astype(np.float32) / 255.0
    arr = (arr - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def embed_images(trunk: Trunk, images: Sequence, size: int = 112, batch_size: int = 64,
                 device: str = "auto", progress: bool = False, desc: str = "features") -> np.ndarray:
    """N x D float32 pooled features of ``images`` (RGB arrays or paths), in order, as the
    RIS paper measures them (not normalised: callers that compare by cosine normalise)."""
    dev = pick_device(device)
    trunk = trunk.to(dev).eval()
    out = []
    for lo in progress_bar(range(0, len(images), batch_size), desc=desc, unit="batch",
                           disable=not progress or not len(images)):
        x = to_batch(images[lo:lo + batch_size], size).to(dev)
        out.append(trunk(x).float().cpu().numpy())
    if not out:
        return np.zeros((0, trunk.feature_dim), np.float32)
    return np.concatenate(out)
