"""Clustering embeddings into fine clusters whose members become inter-instance edges.

* ``kmeans``: one level of spherical k-means.
* ``two_level``: coarse k-means, then k-means inside each coarse cluster, as Wang et al.
  (2017) did to cluster millions of patches; the fine labels are global.
* ``mutual_knn``: i and j are joined when each is among the other's k nearest neighbours
  (crops of the same track skipped) with cosine similarity above a threshold; a fine
  cluster is a connected component of those edges.

k-means runs on faiss when it is importable, else on a numpy implementation (chunked
matrix products, so memory stays bounded). Vectors are expected L2-normalised.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

try:
    import faiss
except ImportError:  # the numpy path below does the same work, slower
    faiss = None

CHUNK = 65536


def nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the most similar centroid (largest dot product) of each row."""
    out = np.empty(len(x), np.int64)
    for s in range(0, len(x), CHUNK):
        out[s:s + CHUNK] = np.argmax(x[s:s + CHUNK] @ centroids.T, axis=1)
    return out


def _kmeans_numpy(x: np.ndarray, k: int, iters: int, rng: np.random.Generator):
    centroids = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iters):
        labels = nearest(x, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, labels, x)
        counts = np.bincount(labels, minlength=k)
        empty = counts == 0  # re-seed empty clusters on random points
        sums[empty] = x[rng.choice(len(x), int(empty.sum()), replace=False)]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = sums / np.maximum(norms, 1e-12)
    return nearest(x, centroids), centroids


def kmeans(x: np.ndarray, k: int, iters: int = 20, seed: int = 0):
    """(labels, centroids) of spherical k-means; k is clipped to the number of rows."""
    x = np.ascontiguousarray(x, np.float32)
    k = max(1, min(int(k), len(x)))
    if k == 1:
        return np.zeros(len(x), np.int64), x.mean(0, keepdims=True)
    if faiss is not None:
        km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, spherical=True,
                          verbose=False, min_points_per_centroid=1)
        km.train(x)
        return km.index.search(x, 1)[1][:, 0].astype(np.int64), km.centroids
    return _kmeans_numpy(x, k, iters, np.random.default_rng(seed))


def two_level(x: np.ndarray, coarse_k: int, fine_k: int, cluster_size: int,
              iters: int = 20, seed: int = 0):
    """(coarse, fine) labels; fine_k 0 sizes each coarse cluster's split by cluster_size."""
    coarse_k = coarse_k or max(1, round(math.sqrt(len(x))))
    coarse, _ = kmeans(x, coarse_k, iters, seed)
    fine = np.empty(len(x), np.int64)
    order = np.argsort(coarse, kind="stable")
    bounds = np.searchsorted(coarse[order], np.arange(coarse.max() + 2))
    offset = 0
    for c in range(len(bounds) - 1):  # a loop over coarse clusters, not over nodes
        members = order[bounds[c]:bounds[c + 1]]
        if len(members) == 0:
            continue
        k = fine_k or math.ceil(len(members) / cluster_size)
        labels, _ = kmeans(x[members], k, iters, seed + c + 1)
        fine[members] = offset + labels
        offset += int(labels.max()) + 1
    return coarse, fine


def centroids_of(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label values, normalised mean vector of each)."""
    values, inverse = np.unique(labels, return_inverse=True)
    sums = np.zeros((len(values), x.shape[1]), np.float64)
    np.add.at(sums, inverse, x)
    sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return values, sums.astype(np.float32)


def assign(x_old: np.ndarray, coarse_old: np.ndarray, fine_old: np.ndarray, x_new: np.ndarray):
    """Labels for new nodes from existing clusters: nearest coarse centroid, then nearest
    fine centroid inside it (existing nodes keep their labels)."""
    coarse_values, coarse_centroids = centroids_of(x_old, coarse_old)
    coarse_new = coarse_values[nearest(x_new, coarse_centroids)]
    fine_new = np.empty(len(x_new), np.int64)
    for c in np.unique(coarse_new):  # a loop over coarse clusters, not over nodes
        fine_values, fine_centroids = centroids_of(x_old[coarse_old == c], fine_old[coarse_old == c])
        rows = np.flatnonzero(coarse_new == c)
        fine_new[rows] = fine_values[nearest(x_new[rows], fine_centroids)]
    return coarse_new, fine_new


def knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, similarities) of the k most similar rows of each row, itself excluded."""
    x = np.ascontiguousarray(x, np.float32)
    k = min(k, len(x) - 1)
    if k <= 0:
        return np.zeros((len(x), 0), np.int64), np.zeros((len(x), 0), np.float32)
    if faiss is not None:
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        sim, idx = index.search(x, k + 1)
    else:
        idx = np.empty((len(x), k + 1), np.int64)
        sim = np.empty((len(x), k + 1), np.float32)
        for s in range(0, len(x), CHUNK):
            block = x[s:s + CHUNK] @ x.T
            top = np.argsort(-block, axis=1)[:, :k + 1]
            idx[s:s + CHUNK], sim[s:s + CHUNK] = top, np.take_along_axis(block, top, 1)
    not_self = idx != np.arange(len(x))[:, None]
    # drop self (usually column 0) and keep k per row
    keep = not_self & (np.cumsum(not_self, axis=1) <= k)
    return idx[keep].reshape(len(x), k).astype(np.int64), sim[keep].reshape(len(x), k)


def mutual_knn(x: np.ndarray, k: int, threshold: float, track: np.ndarray):
    """Mutual k-nearest-neighbour edges (a < b, similarity) between crops of different
    tracks; a track's own crops do not use up the k places."""
    idx, sim = knn(x, 2 * k)
    other = track[idx] != track[:, None]
    keep = other & (np.cumsum(other, axis=1) <= k) & (sim >= threshold)
    rows = np.broadcast_to(np.arange(len(x))[:, None], idx.shape)
    a, b, s = rows[keep], idx[keep], sim[keep]
    n = np.int64(len(x))
    directed = a * n + b
    mutual = np.isin(b * n + a, directed) & (a < b)
    return a[mutual], b[mutual], s[mutual]


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n)).tocsr()
    return connected_components(graph, directed=False)[1].astype(np.int64)
