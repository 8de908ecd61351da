"""Linear and kNN probes on frozen features of any ImageFolder data set the user points at.

``DIR/train/<class>/*`` and ``DIR/val/<class>/*`` are used as given; a folder with class
sub-folders only is split 80/20 per class, deterministically.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def image_folder(root: str | Path) -> tuple[list[Path], np.ndarray, list[str]]:
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    paths, labels = [], []
    for ci, c in enumerate(classes):
        files = sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in IMAGE_EXTS)
        paths += files
        labels += [ci] * len(files)
    return paths, np.array(labels, np.int64), classes


def load_splits(root: str | Path) -> dict:
    """{'train': (paths, labels), 'val': (paths, labels), 'classes': [...]}."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder at {root}")
    if (root / "train").is_dir() and (root / "val").is_dir():
        tr, ytr, classes = image_folder(root / "train")
        va, yva, val_classes = image_folder(root / "val")
        if val_classes != classes:
            raise ValueError(f"train and val classes differ in {root}")
    else:
        paths, labels, classes = image_folder(root)
        rng = np.random.default_rng(0)
        is_val = np.zeros(len(paths), bool)
        for c in range(len(classes)):
            idx = np.flatnonzero(labels == c)
            is_val[rng.permutation(idx)[: max(1, len(idx) // 5)]] = True
        tr = [p for p, v in zip(paths, is_val) if not v]
        va = [p for p, v in zip(paths, is_val) if v]
        ytr, yva = labels[~is_val], labels[is_val]
    if len(classes) < 2 or len(tr) == 0 or len(va) == 0:
        raise ValueError(f"{root} needs at least 2 class folders with images")
    return {"train": (tr, ytr), "val": (va, yva), "classes": classes}


def knn_accuracy(train_x, train_y, val_x, val_y, k: int = 20, temperature: float = 0.07) -> float:
    """Weighted kNN on cosine similarity (the instance-discrimination protocol)."""
    tx = torch.nn.functional.normalize(torch.as_tensor(train_x, dtype=torch.float32), dim=1)
    vx = torch.nn.functional.normalize(torch.as_tensor(val_x, dtype=torch.float32), dim=1)
    ty = torch.as_tensor(train_y)
    n_classes = int(max(ty.max(), int(np.max(val_y)))) + 1
    sim, idx = (vx @ tx.T).topk(min(k, len(tx)), dim=1)
    votes = torch.zeros(len(vx), n_classes).scatter_add_(1, ty[idx], (sim / temperature).exp())
    return float((votes.argmax(dim=1).numpy() == np.asarray(val_y)).mean())


def linear_probe_accuracy(train_x, train_y, val_x, val_y, epochs: int = 300,
                          weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Multinomial logistic regression on standardised frozen features (full-batch)."""
    torch.manual_seed(seed)
    tx = torch.as_tensor(train_x, dtype=torch.float32)
    mean, std = tx.mean(0), tx.std(0).clamp(min=1e-6)
    tx = (tx - mean) / std
    vx = (torch.as_tensor(val_x, dtype=torch.float32) - mean) / std
    ty = torch.as_tensor(train_y)
    n_classes = int(max(ty.max(), int(np.max(val_y)))) + 1
    model = torch.nn.Linear(tx.shape[1], n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(tx), ty).backward()
        opt.step()
    with torch.no_grad():
        pred = model(vx).argmax(dim=1).numpy()
    return float((pred == np.asarray(val_y)).mean())
