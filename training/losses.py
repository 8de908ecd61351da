"""Objectives: the triplet ranking loss of Wang & Gupta (2015) and MoCo v2's InfoNCE.

Triplet ranking, as in the 2015 code: embeddings are L2-normalised, distance is cosine
distance D(x, y) = 1 - x.y, and for a pair (a, p) and a negative n the loss is the
symmetric hinge  max(0, D(a,p) - D(a,n) + M) + max(0, D(a,p) - D(p,n) + M), so the anchor
and the positive are both pushed away from n. Negatives are the other images of the batch
(both sides of every other pair), never one of the pair's own tracks or clusters; per pair
half are the hardest (closest to the pair) and half are drawn at random.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def shares_owner(candidates: torch.Tensor, a_owner: torch.Tensor, p_owner: torch.Tensor) -> torch.Tensor:
    """[B, N] mask: True where candidate n has the owner (track, video, cluster) of a or p of
    pair i."""
    return (candidates[None] == a_owner[:, None]) | (candidates[None] == p_owner[:, None])


def shares_cluster(candidates: torch.Tensor, a_cluster: torch.Tensor,
                   p_cluster: torch.Tensor) -> torch.Tensor:
    """[B, N] mask: True where candidate n lies in the graph cluster of a or p of pair i; -1,
    a crop that is no graph node, is in no cluster and shares none."""
    return (candidates[None] >= 0) & shares_owner(candidates, a_cluster, p_cluster)


def forbidden_negatives(a_group: torch.Tensor, p_group: torch.Tensor, a_cluster: torch.Tensor,
                        p_cluster: torch.Tensor) -> torch.Tensor:
    """[B, 2B] mask: True where candidate n (anchors then positives) may not be a negative of
    pair i, because it shares a track (or frame video) or a cluster with a or p of pair i."""
    cl = torch.cat([a_cluster, p_cluster])
    same_group = shares_owner(torch.cat([a_group, p_group]), a_group, p_group)
    same_cluster = shares_cluster(cl, a_cluster, p_cluster)
    b = len(a_group)
    own = torch.zeros_like(same_group)
    own[torch.arange(b), torch.arange(b)] = True
    own[torch.arange(b), torch.arange(b) + b] = True
    return same_group | same_cluster | own


def select_negatives(closeness: torch.Tensor, forbidden: torch.Tensor, k: int,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, ``k // 2`` allowed candidates with the highest ``closeness`` and the rest at
    random among the allowed others. Returns indices [B, k] and a validity mask [B, k] (a row
    with fewer than k allowed candidates has invalid slots)."""
    neg_inf = torch.finfo(closeness.dtype).min
    hard_k = min(k // 2, closeness.shape[1])
    hard_score = closeness.masked_fill(forbidden, neg_inf)
    hard = hard_score.topk(hard_k, dim=1).indices
    taken = forbidden.clone()
    taken.scatter_(1, hard, True)
    noise = torch.rand(closeness.shape, device=closeness.device, generator=generator)
    rand_k = min(k - hard_k, closeness.shape[1])
    rand = noise.masked_fill(taken, -1.0).topk(rand_k, dim=1).indices
    idx = torch.cat([hard, rand], 1)
    # A random slot that fell on a taken candidate (too few allowed ones) is not a negative.
    valid = torch.cat([~forbidden.gather(1, hard), ~taken.gather(1, rand)], 1)
    return idx, valid


def triplet_loss(a: torch.Tensor, p: torch.Tensor, forbidden: torch.Tensor, margin: float = 0.5,
                 k: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean symmetric hinge over (pair, negative) slots; embeddings are normalised here."""
    a, p = F.normalize(a.float(), dim=1), F.normalize(p.float(), dim=1)
    cand = torch.cat([a, p])
    d_ap = 1 - (a * p).sum(1, keepdim=True)
    d_an = 1 - a @ cand.T
    d_pn = 1 - p @ cand.T
    # Hardest = closest to the pair; chosen without gradient, as a mining step.
    idx, valid = select_negatives(-(d_an + d_pn).detach(), forbidden, k, generator)
    hinge = F.relu(d_ap - d_an.gather(1, idx) + margin) + F.relu(d_ap - d_pn.gather(1, idx) + margin)
    return (hinge * valid).sum() / valid.sum().clamp(min=1)


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
             temperature: float, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """MoCo's InfoNCE: each query's key is its positive, the queue [dim, K] its negatives,
    less those ``excluded`` [B, K] marks for that query. ``q``, ``k`` and the queue are
    expected L2-normalised."""
    pos = (q * k).sum(1, keepdim=True)
    neg = q @ queue
    if excluded is not None:
        neg = neg.masked_fill(excluded, float("-inf"))
    logits = torch.cat([pos, neg], 1).float() / temperature
    labels = torch.zeros(len(q), dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)
