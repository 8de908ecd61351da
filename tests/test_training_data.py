"""Pair data: sources read from SQL once, the mixing sampler, and loading in worker processes."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from tests.test_training_fixtures import SMALL, make_store, open_train_store
from vidmine.errors import UsageError
from vidmine.images import decode_image
from vidmine.training.augment import CpuAugment, keep_decoded
from vidmine.training.config import TrainConfig, parse_positives
from vidmine.training.data import (
    MixBatchSampler,
    PairDataset,
    load_pair_data,
    neighbours_in_time,
)


@pytest.fixture
def train_store(tmp_path):
    yield from open_train_store(tmp_path)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**SMALL, **kw})


def test_sources_from_both_databases(store):
    truth = make_store(store)
    data = load_pair_data(store, _cfg(positives="intra,inter,tracker,temporal,none"))
    t = data.table
    assert data.sizes["intra"] == truth["n_intra"] and data.sizes["inter"] == truth["n_inter"]
    bounds = np.cumsum([0] + list(data.sizes.values()))
    src = dict(zip(data.sizes, itertools.pairwise(bounds)))

    def rows(name):
        lo, hi = src[name]
        return data.anchors[lo:hi], data.positives[lo:hi]

    a, p = rows("intra")
    assert (t.track[a] == t.track[p]).all() and (t.group[a] == t.group[p]).all()
    a, p = rows("inter")
    assert (t.track[a] != t.track[p]).all() and (t.cluster[a] == t.cluster[p]).all()
    instance = truth["instance"]
    assert all(instance[i] == instance[j] for i, j in zip(t.ids[a], t.ids[p]))
    a, p = rows("tracker")  # crops 5 frames apart in tracks of 4: every ordered pair of a track
    assert len(a) == 9 * 6 and (t.track[a] == t.track[p]).all()
    assert (t.frame[p] - t.frame[a] >= 1).all()
    a, p = rows("temporal")  # 4 frames per video, 10 frames apart
    assert len(a) == 3 * 6 and t.is_frame[a].all() and (t.video[a] == t.video[p]).all()
    a, p = rows("none")
    assert (a == p).all() and len(a) == 36 and not t.is_frame[a].any()
    # Frames form their own negative groups (one per video), apart from every track id.
    assert set(t.group[t.is_frame]).isdisjoint(set(t.group[~t.is_frame]))
    assert (t.cluster[~t.is_frame] >= 0).all() and (t.cluster[t.is_frame] == -1).all()


def test_gaps_limit_tracker_and_temporal_pairs(train_store):
    store, _ = train_store
    data = load_pair_data(store, _cfg(positives="tracker:1,temporal:1", min_gap=6, max_gap=10))
    t = data.table
    gap = t.frame[data.positives] - t.frame[data.anchors]
    assert ((gap >= 6) & (gap <= 10)).all()
    assert data.sizes == {"tracker": 9 * 2, "temporal": 3 * 3}  # gaps of 10; frames 10 apart


def test_empty_source_is_a_clear_error(sqlite_store):
    make_store(sqlite_store)
    with pytest.raises(UsageError, match="no transitive pairs of graph run 999.*vidmine-graph"):
        load_pair_data(sqlite_store, _cfg(positives="transitive", pairs_run=999))
    with pytest.raises(UsageError, match="no two stored full frames"):
        load_pair_data(sqlite_store, _cfg(positives="temporal", min_gap=500, max_gap=600))
    with pytest.raises(ValueError, match="unknown positive source 'optical'"):
        parse_positives("optical:1")


def test_neighbours_in_time_matches_brute_force():
    rng = np.random.default_rng(0)
    group = rng.integers(0, 5, 200)
    frame = rng.integers(0, 300, 200)
    i, j = neighbours_in_time(group, frame, 3, 40)
    got = {(a, b) for a, b in zip(i.tolist(), j.tolist())}
    want = set()
    for a in range(200):
        for b in range(200):
            d = frame[b] - frame[a]
            if a != b and group[a] == group[b] and 3 <= d <= 40:
                want.add((a, b))
    assert got == want


def test_mix_sampler_weights_determinism_and_ranks():
    s = MixBatchSampler({"x": 10, "y": 1000}, {"x": 3.0, "y": 1.0}, batch_size=4000, steps=5,
                        seed=7)
    idx = s.batch(0)[:, 0]
    assert abs((idx < 10).mean() - 0.75) < 0.03 and idx.max() < 1010
    assert np.array_equal(s.batch(3), s.batch(3)) and not np.array_equal(s.batch(3), s.batch(4))
    other = MixBatchSampler({"x": 10, "y": 1000}, {"x": 3.0, "y": 1.0}, 4000, 5, seed=7, rank=1)
    assert not np.array_equal(s.batch(0), other.batch(0))
    resumed = MixBatchSampler({"x": 10, "y": 1000}, {"x": 3.0, "y": 1.0}, 4000, 5, seed=7,
                              start_step=3)
    assert [st for st, _ in resumed] == [3, 4] and np.array_equal(next(iter(resumed))[1], s.batch(3))


def _loader_batches(data, reader, workers, context):
    sampler = MixBatchSampler(data.sizes, data.weights, 8, 4, seed=1)
    ds = PairDataset(data, reader, CpuAugment(32), seed=1)
    loader = DataLoader(ds, batch_size=None, sampler=sampler, num_workers=workers,
                        multiprocessing_context=context if workers else None)
    return list(loader)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_read_crops_without_sql(tmp_path, train_store, context):
    """Pairs come from SQL once: the loader still works with the index file gone, in worker
    processes started by fork or spawn, and gives the batches a single process gives."""
    store, _ = train_store
    data = load_pair_data(store, _cfg(positives="intra:1,temporal:1"))
    store.index.dispose()
    db = store.root / "index.sqlite"
    db.rename(tmp_path / "moved.sqlite")
    # One spawned worker is enough to prove pickling; each one pays a fresh torch import.
    batches = _loader_batches(data, store.reader, 2 if context == "fork" else 1, context)
    single = _loader_batches(data, store.reader, 0, None)
    assert len(batches) == 4
    for b, s in zip(batches, single):
        assert b["a"].shape == (8, 3, 32, 32) and b["a"].dtype == torch.uint8
        assert torch.equal(b["a"], s["a"]) and torch.equal(b["p"], s["p"])
        assert torch.equal(b["a_group"], s["a_group"])
    groups = torch.cat([b["a_group"] for b in batches])
    assert (groups >= 0).any() and (groups < 0).any()  # tracks and frame videos both drawn


def test_single_pairs_with_distributed_sampler(train_store):
    store, _ = train_store
    data = load_pair_data(store, _cfg(positives="intra"))
    ds = PairDataset(data, store.reader, CpuAugment(32))
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        for batch in DataLoader(ds, batch_size=5, sampler=sampler):
            assert batch["a"].shape[1:] == (3, 32, 32)
            assert torch.equal(batch["a_group"], batch["p_group"])  # intra: one track
            seen.append(len(batch["a"]))
    assert sum(seen) == len(ds) + len(ds) % 2


def test_raw_bytes_for_the_gpu_decoder(train_store):
    store, _ = train_store
    data = load_pair_data(store, _cfg(positives="none"))
    batch = PairDataset(data, store.reader, transform=None)[(0, MixBatchSampler(
        data.sizes, data.weights, 3, 1).batch(0))]
    assert len(batch["a"]) == 3 and batch["a"][0].dtype == torch.uint8
    assert bytes(batch["a"][0][:2].tolist()) == b"\xff\xd8"  # a JPEG stream for nvjpeg
    assert all(torch.equal(x, y) for x, y in zip(batch["a"], batch["p"]))  # same crop twice


def test_decoded_pixels_for_the_gpu_recipe(train_store):
    """--gpu-decode workers: the workers send each crop's pixels, as the store holds them."""
    store, _ = train_store
    data = load_pair_data(store, _cfg(positives="intra"))
    spec = MixBatchSampler(data.sizes, data.weights, 3, 1).batch(0)
    decoded = PairDataset(data, store.reader, transform=keep_decoded)[(0, spec)]
    encoded = PairDataset(data, store.reader, transform=None)[(0, spec)]
    assert len(decoded["a"]) == len(decoded["p"]) == 3
    for img, blob in zip(decoded["a"] + decoded["p"], encoded["a"] + encoded["p"]):
        assert img.dtype == torch.uint8 and img.shape[0] == 3
        assert torch.equal(img, torch.from_numpy(decode_image(bytes(blob.tolist()))).permute(2, 0, 1))
