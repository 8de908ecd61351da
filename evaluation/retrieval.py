"""Instance retrieval: query each image, rank all others by cosine similarity; an answer is
relevant when it shares the query's label (on held-out tracks: the same track)."""
from __future__ import annotations

import numpy as np
import torch


def retrieval_metrics(features: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5),
                      chunk: int = 1024) -> dict[str, float]:
    """recall@k (some relevant item in the top k) and mAP, over queries with >= 1 relevant."""
    x = torch.nn.functional.normalize(torch.as_tensor(features, dtype=torch.float32), dim=1)
    y = torch.as_tensor(np.asarray(labels))
    n = len(x)
    hits = {k: [] for k in ks}
    aps = []
    for lo in range(0, n, chunk):
        q = torch.arange(lo, min(lo + chunk, n))
        sim = x[q] @ x.T
        sim[torch.arange(len(q)), q] = -float("inf")          # a query never retrieves itself
        order = sim.argsort(dim=1, descending=True)[:, :-1]    # drop the query itself (last)
        rel = (y[order] == y[q, None]).float()
        n_rel = rel.sum(dim=1)
        valid = n_rel > 0
        for k in ks:
            hits[k].append((rel[:, :k].sum(dim=1) > 0)[valid])
        precision = rel.cumsum(dim=1) / torch.arange(1, rel.shape[1] + 1)
        aps.append(((precision * rel).sum(dim=1) / n_rel.clamp(min=1))[valid])
    out = {f"recall@{k}": float(torch.cat(hits[k]).float().mean()) for k in ks}
    out["mAP"] = float(torch.cat(aps).mean())
    out["queries"] = int(sum(len(a) for a in aps))
    return out
