"""Features from a backbone's pooled output, as the RIS paper measures them."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from vidmine.training.backbones import Trunk

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)

Image = np.ndarray | Path | str


def load_rgb(item: Image) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return item
    img = cv2.imread(str(item), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"not a readable image: {item}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def to_batch(images: Sequence[Image], size: int) -> torch.Tensor:
    arr = np.stack([cv2.resize(load_rgb(im), (size, size), interpolation=cv2.INTER_AREA)
                    for im in images]).astype(np.float32) / 255.0
    arr = (arr - MEAN) / STD
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def extract_features(trunk: Trunk, images: Sequence[Image], size: int = 112, batch_size: int = 64,
                     device: str = "auto", progress: bool = True) -> np.ndarray:
    """N x D float32 features of ``images`` (arrays or paths), in order."""
    dev = pick_device(device)
    trunk = trunk.to(dev).eval()
    out = []
    for lo in tqdm(range(0, len(images), batch_size), desc="features", unit="batch",
                   disable=not progress, leave=False):
        x = to_batch(images[lo:lo + batch_size], size).to(dev)
        out.append(trunk(x).float().cpu().numpy())
    if not out:
        return np.zeros((0, trunk.feature_dim), np.float32)
    return np.concatenate(out)
