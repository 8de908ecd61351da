"""Pair data: positive pairs read from SQL once into arrays, crop bytes from the LMDB shards.

Everything a DataLoader worker touches is a numpy array of fixed-width values (no Python
objects per crop, so fork's copy-on-write pages stay shared) plus a ``CropReader`` that opens
its LMDB environments lazily in whichever process uses it (fork or spawn).

A *source* of positives is two row-index arrays into the crop table (anchors, positives):
``intra``, ``inter`` and ``transitive`` are rows of the pairs table; ``tracker`` pairs two
crops of one track, ``temporal`` two stored full frames of one video, each between
``min_gap`` and ``max_gap`` source frames apart; ``none`` pairs a crop with itself (the
plain MoCo baseline: two augmentations of one image).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sqlalchemy import func, select
from torch.utils.data import Dataset

from vidmine.arrays import lookup_sorted
from vidmine.errors import UsageError
from vidmine.images import decodable, decode_image
from vidmine.storage.cropstore import CropReader
from vidmine.storage.db import Index
from vidmine.storage.schema import clusters, crops, pairs
from vidmine.storage.store import Store

from .config import PAIR_SOURCES, TrainConfig, parse_positives


@dataclass
class CropTable:
    """Every crop of the index as parallel arrays, sorted by crop id."""
    ids: np.ndarray          # int64
    shard: np.ndarray        # int32 index into shard_names
    key: np.ndarray          # fixed-width bytes
    group: np.ndarray        # int64: one value per track (objects) or per video (frames)
    cluster: np.ndarray      # int64 fine cluster in the current graph, -1 if none
    video: np.ndarray        # int64
    track: np.ndarray        # int64, -1 for frames
    frame: np.ndarray        # int64 source frame index
    is_frame: np.ndarray     # bool
    shard_names: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def rows_of(self, crop_ids: np.ndarray) -> np.ndarray:
        rows = lookup_sorted(self.ids, crop_ids)
        if (rows < 0).any():
            raise UsageError("pairs refer to crops that are not in the crops table")
        return rows

    def refs(self, rows: np.ndarray) -> list[tuple[str, str]]:
        return [(self.shard_names[s], k.decode()) for s, k in zip(self.shard[rows], self.key[rows])]


def read_crop_table(conn) -> CropTable:
    cols = Index.read_columns(conn, select(crops.c.id, crops.c.video_id, func.coalesce(crops.c.track_id, -1)
                              .label("track"), crops.c.kind, crops.c.frame_index, crops.c.shard,
                              crops.c.key).order_by(crops.c.id))
    shard_names, shard = np.unique(cols["shard"].astype(str), return_inverse=True)
    is_frame = cols["kind"].astype(str) == "frame"
    track = cols["track"].astype(np.int64)
    video = cols["video_id"].astype(np.int64)
    # Negatives must avoid the anchor's instance: its track, or for full frames its video.
    # Frames get negative group ids so they never collide with track ids.
    group = np.where(is_frame, -1 - video, track)
    ids = cols["id"].astype(np.int64)
    cluster = np.full(len(ids), -1, np.int64)
    # The current graph is every clusters row (builds are incremental); should a crop have
    # rows from several runs, the latest one counts.
    c = Index.read_columns(conn, select(clusters.c.crop_id, clusters.c.fine)
                           .order_by(clusters.c.run_id.desc()))
    if len(c["crop_id"]) and len(ids):
        crop_ids, first = np.unique(c["crop_id"].astype(np.int64), return_index=True)
        known = np.isin(crop_ids, ids)
        cluster[np.searchsorted(ids, crop_ids[known])] = c["fine"][first[known]]
    return CropTable(ids=ids, shard=shard.astype(np.int32),
                     key=cols["key"].astype(str).astype(np.bytes_), group=group, cluster=cluster,
                     video=video, track=track, frame=cols["frame_index"].astype(np.int64),
                     is_frame=is_frame, shard_names=list(shard_names))


def read_pairs(conn, table: CropTable, kind: str, split: str,
               run_id: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Rows (into ``table``) of the pairs of one kind and split: of every graph run (the
    current graph; builds are incremental), or of run ``run_id`` alone."""
    where = (pairs.c.kind == kind) & (pairs.c.split == split)
    if run_id is not None:
        where &= pairs.c.run_id == run_id
    p = Index.read_columns(conn, select(pairs.c.anchor, pairs.c.positive).where(where))
    return (table.rows_of(p["anchor"].astype(np.int64)),
            table.rows_of(p["positive"].astype(np.int64)))


def neighbours_in_time(group: np.ndarray, frame: np.ndarray, min_gap: int,
                       max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """All (i, j) with group[i] == group[j] and min_gap <= frame[j] - frame[i] <= max_gap.

    One vectorized pass per offset d in the (group, frame) order; it stops at the first d
    where no element is still within ``max_gap`` of the one d places before it.
    """
    order = np.lexsort((frame, group))
    g, f = group[order], frame[order]
    out_i, out_j = [], []
    for d in range(1, len(order)):
        near = (g[d:] == g[:-d]) & (f[d:] - f[:-d] <= max_gap)
        if not near.any():
            break
        keep = near & (f[d:] - f[:-d] >= min_gap)
        out_i.append(order[:-d][keep])
        out_j.append(order[d:][keep])
    if not out_i:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(out_i), np.concatenate(out_j)


def source_pairs(conn, table: CropTable, name: str, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    if name in PAIR_SOURCES:
        return read_pairs(conn, table, name, cfg.split, cfg.pairs_run)
    objects = np.flatnonzero(~table.is_frame & (table.track >= 0))
    if name == "none":
        return objects, objects
    chosen = objects if name == "tracker" else np.flatnonzero(table.is_frame)
    key = table.track[chosen] if name == "tracker" else table.video[chosen]
    i, j = neighbours_in_time(key, table.frame[chosen], cfg.min_gap, cfg.max_gap)
    return chosen[i], chosen[j]


def empty_source_message(name: str, cfg: TrainConfig) -> str:
    if name in PAIR_SOURCES:
        run = f" of graph run {cfg.pairs_run}" if cfg.pairs_run is not None else ""
        return (f"no {name} pairs{run} in split {cfg.split!r} yet; build them with "
                "`vidmine-graph embed` and `vidmine-graph build`, or choose other --positives")
    if name == "temporal":
        return (f"no two stored full frames of one video {cfg.min_gap}-{cfg.max_gap} frames "
                "apart; mine with full frames stored (vidmine-mine), or change --min-gap/--max-gap")
    what = "crops" if name == "none" else f"tracks with two crops {cfg.min_gap}-{cfg.max_gap} frames apart"
    return f"no {what} in the index yet; mine some videos first with vidmine-mine"


@dataclass
class PairData:
    """The crop table and the concatenated pairs of every source in the mix."""
    table: CropTable
    anchors: np.ndarray
    positives: np.ndarray
    sizes: dict[str, int]      # pairs per source, in concatenation order
    weights: dict[str, float]


def load_pair_data(store: Store, cfg: TrainConfig) -> PairData:
    """Read the crop table and every positive source of ``cfg.positives``: the only SQL reads
    of a training job."""
    mix = parse_positives(cfg.positives)
    with store.index.read() as conn:
        table = read_crop_table(conn)
        found = {name: source_pairs(conn, table, name, cfg) for name in mix}
    for name, (a, _) in found.items():
        if len(a) == 0:
            raise UsageError(empty_source_message(name, cfg))
    return PairData(table=table,
                    anchors=np.concatenate([a for a, _ in found.values()]).astype(np.int64),
                    positives=np.concatenate([p for _, p in found.values()]).astype(np.int64),
                    sizes={n: len(a) for n, (a, _) in found.items()}, weights=mix)


def batch_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


class MixBatchSampler:
    """Batches of pair indices drawn with replacement from a weighted mix of sources.

    Batch ``step`` of ``rank`` is a pure function of (seed, rank, step), so ranks draw
    independent streams (as DistributedSampler splits an epoch) and a resumed job continues
    the exact sequence from its saved step. Each item also carries a swap bit: which side of
    the pair is the anchor.
    """

    def __init__(self, sizes: dict[str, int], weights: dict[str, float], batch_size: int,
                 steps: int, seed: int = 0, rank: int = 0, start_step: int = 0):
        self.sizes = np.array([sizes[n] for n in sizes], np.int64)
        w = np.array([weights[n] for n in sizes], np.float64)
        self.p = w / w.sum()
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.batch_size, self.steps, self.seed, self.rank = batch_size, steps, seed, rank
        self.start_step = start_step

    def batch(self, step: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.rank, step])
        src = rng.choice(len(self.sizes), size=self.batch_size, p=self.p)
        within = (rng.random(self.batch_size) * self.sizes[src]).astype(np.int64)
        swap = rng.integers(0, 2, self.batch_size)
        return np.stack([self.offsets[src] + within, swap], axis=1)

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            yield step, self.batch(step)

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)


def bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


SINGLE_PAIR_TRIES = 4


class PairDataset(Dataset):
    """Pairs of crops. ``dataset[(step, spec)]`` with a :class:`MixBatchSampler` item gives one
    batch (one LMDB transaction per shard, augmentations seeded by (seed, rank, step));
    ``dataset[i]`` gives pair ``i`` alone, for a ``DistributedSampler`` and default collation.

    With ``transform=None`` images stay encoded (1-D uint8 tensors) for the GPU decoder;
    otherwise they are decoded here and ``transform`` (e.g. training.augment.CpuAugment)
    maps the list of uint8 CHW images to one uint8 [N, 3, size, size] tensor.
    """

    def __init__(self, data: PairData, reader: CropReader, transform=None, seed: int = 0,
                 rank: int = 0):
        self.table, self.anchors, self.positives = data.table, data.anchors, data.positives
        self.reader, self.transform, self.seed, self.rank = reader, transform, seed, rank

    def __len__(self) -> int:
        return len(self.anchors)

    def __getitem__(self, index):
        if isinstance(index, tuple):
            step, spec = index
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(batch_seed(self.seed, self.rank, step))
                return self._batch(spec[:, 0], spec[:, 1].astype(bool), step)
        # One pair alone (default collation): a pair with an unreadable crop is replaced by
        # the next readable one; "bad" has a fixed size so that batches of it collate.
        bad = []
        for tries in range(SINGLE_PAIR_TRIES):
            out = self._batch(np.array([(index + tries) % len(self)]), np.zeros(1, bool), -1)
            bad += out.pop("bad").tolist()
            if not out.pop("empty", False):
                break
        out = {k: (v[0] if isinstance(v, (torch.Tensor, list)) else v) for k, v in out.items()}
        out["bad"] = torch.tensor((bad + [-1] * 2 * SINGLE_PAIR_TRIES)[:2 * SINGLE_PAIR_TRIES])
        return out

    def _image(self, blob: bytes | None):
        """A crop for the transform (decoded) or for the GPU decoder (bytes checked to
        decode); None when it is missing, on a damaged page or not an image."""
        if blob is None:
            return None
        if self.transform is None:
            return bytes_tensor(blob) if decodable(blob) else None
        try:
            return torch.from_numpy(decode_image(blob)).permute(2, 0, 1)
        except ValueError:
            return None

    def _batch(self, idx: np.ndarray, swap: np.ndarray, step: int) -> dict:
        """The batch of pairs ``idx``. A pair with a crop that cannot be read is replaced by
        another pair of the batch; the unreadable crop ids come back in "bad" (the trainer
        names them and fails past 1 %); "empty" when no pair of the batch could be read."""
        a = np.where(swap, self.positives[idx], self.anchors[idx])
        p = np.where(swap, self.anchors[idx], self.positives[idx])
        rows = np.concatenate([a, p])
        images = [self._image(b) for b in self.reader.get_many(self.table.refs(rows),
                                                                missing_ok=True)]
        n = len(idx)
        readable = np.array([im is not None for im in images])
        bad = torch.from_numpy(self.table.ids[rows[~readable]])
        good = readable[:n] & readable[n:]
        if not good.any():
            return {"bad": bad, "empty": True}
        if not good.all():
            src = np.arange(n)
            fill = np.flatnonzero(good)
            src[~good] = fill[np.arange(n - len(fill)) % len(fill)]
            a, p = a[src], p[src]
            images = [images[i] for i in src] + [images[n + i] for i in src]
        if self.transform is not None:
            images = self.transform(images)
        t = self.table
        return {"a": images[:n], "p": images[n:], "step": step, "bad": bad,
                "a_group": torch.from_numpy(t.group[a]), "p_group": torch.from_numpy(t.group[p]),
                "a_video": torch.from_numpy(t.video[a]), "p_video": torch.from_numpy(t.video[p]),
                "a_cluster": torch.from_numpy(t.cluster[a]),
                "p_cluster": torch.from_numpy(t.cluster[p])}
