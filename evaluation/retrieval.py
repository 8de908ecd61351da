"""Instance retrieval: query each image, rank the others by cosine similarity; an answer is
relevant when it shares the query's label (on held-out tracks: the same track; on rendered
objects: the same object). Answers in the query's own *group* (the same render of the same
object) are left out of the ranking, so near copies of the query neither help nor hurt."""
from __future__ import annotations

import numpy as np
import torch


def retrieval_metrics(features: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5),
                      chunk: int = 1024, groups: np.ndarray | None = None,
                      per_query: bool = False) -> dict:
    """recall@k (some relevant item in the top k) and mAP, over queries with >= 1 relevant;
    with ``per_query`` also "ap" and "ap_labels": each of those queries' AP and label."""
    x = torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)
    y = torch.as_tensor(np.asarray(labels))
    g = torch.as_tensor(np.unique(np.asarray(groups), return_inverse=True)[1]) \
        if groups is not None else torch.arange(len(y))
    n = len(x)
    hits = {k: [] for k in ks}
    aps, ap_labels = [], []
    for lo in range(0, n, chunk):
        q = torch.arange(lo, min(lo + chunk, n))
        sim = x[q] @ x.T
        own = g[None, :] == g[q, None]                         # the query and its own group
        sim[own] = -float("inf")
        order = sim.argsort(dim=1, descending=True)
        rel = (y[order] == y[q, None]).float()
        rel[torch.gather(own, 1, order)] = 0                   # left out: never relevant
        n_rel = rel.sum(dim=1)
        valid = n_rel > 0
        for k in ks:
            hits[k].append((rel[:, :k].sum(dim=1) > 0)[valid])
        precision = rel.cumsum(dim=1) / torch.arange(1, rel.shape[1] + 1)
        aps.append(((precision * rel).sum(dim=1) / n_rel.clamp(min=1))[valid])
        ap_labels.append(y[q][valid])
    out = {f"recall@{k}": float(torch.cat(hits[k]).float().mean()) for k in ks}
    out["mAP"] = float(torch.cat(aps).mean())
    out["queries"] = int(sum(len(a) for a in aps))
    if per_query:
        out["ap"] = torch.cat(aps).numpy()
        out["ap_labels"] = torch.cat(ap_labels).numpy()
    return out


def per_label_ap(ap: np.ndarray, ap_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean AP, number of queries) per label, labels sorted: the units of a paired interval
    whose query-weighted mean is the mAP."""
    _, inverse, counts = np.unique(ap_labels, return_inverse=True, return_counts=True)
    return np.bincount(inverse, weights=ap) / counts, counts
