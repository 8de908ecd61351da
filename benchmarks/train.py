"""Trainer throughput on real LMDB crops against the same model fed synthetic device tensors.

    python benchmarks/train.py                    # a temporary store of synthetic tracks
    python benchmarks/train.py --workdir W --positives transitive --json

In one run: (1) pairs/s of the training step alone, fed random tensors already on the
device; (2) pairs/s of the whole path: LMDB -> loader -> decode + augment (nvjpeg and the
batched GPU recipe on CUDA; workers with the per-image recipe on CPU) -> the same step;
their ratio is the share of the model's speed the data path keeps; on CUDA (2) runs twice,
with JPEGs decoded by nvjpeg in the trainer and by the loader workers. (3) Loader crops/s per
worker core against bare JPEG decoding of the same crops on one core (only the decode,
bytes already in memory), so (3) says what the augmentation and LMDB reads cost (CPU only).

On CUDA it runs MoCo v2 ResNet-50 at 128 px, batch 256, bf16, channels-last by default.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vidmine.images import decode_image
from vidmine.storage.store import StorageConfig, Store
from vidmine.training.augment import CpuAugment
from vidmine.training.config import TrainConfig
from vidmine.training.data import MixBatchSampler, PairDataset
from vidmine.training.trainer import Trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_store(root: Path, crops: int, crop_size: int) -> Store:
    # The synthetic tracks come from the test factories; the checkout's root goes last on the
    # path so that an installed vidmine is never shadowed by its source folder.
    sys.path.append(str(Path(__file__).resolve().parents[1]))
    from tests.factories import fill_store
    store = Store(StorageConfig(workdir=str(root)))
    tracks = max(1, crops // 8 // 4)
    fill_store(store, n_videos=4, tracks_per_video=tracks, crops_per_track=8, crop_size=crop_size)
    return store


def synthetic_rate(trainer: Trainer, warmup: int, steps: int) -> float:
    cfg, dev = trainer.cfg, trainer.device
    b, s = cfg.batch_size, cfg.image_size
    fmt = torch.channels_last if trainer.channels_last else torch.contiguous_format
    a = torch.randn(b, 3, s, s, device=dev).contiguous(memory_format=fmt)
    p = torch.randn(b, 3, s, s, device=dev).contiguous(memory_format=fmt)
    meta = {"a_group": torch.arange(b, device=dev), "p_group": torch.arange(b, device=dev),
            "a_cluster": torch.full((b,), -1, device=dev),
            "p_cluster": torch.full((b,), -1, device=dev)}
    for i in range(warmup + steps):
        if i == warmup:
            sync(dev)
            t0 = time.perf_counter()
        trainer.seed_step(i)
        trainer.train_step(a, p, meta)
    sync(dev)
    return steps * b / (time.perf_counter() - t0)


def real_rate(trainer: Trainer, warmup: int, steps: int) -> float:
    dev = trainer.device
    batches = iter(trainer.loader())
    for i in range(warmup + steps):
        if i == warmup:
            sync(dev)
            t0 = time.perf_counter()
        batch = next(batches)
        trainer.seed_step(i)
        trainer.train_step(*trainer.prepare(batch))
    sync(dev)
    return steps * trainer.cfg.batch_size / (time.perf_counter() - t0)


def loader_vs_decode(trainer: Trainer, workers: int, batches: int) -> dict:
    """Crops/s per core: the CPU loader (LMDB + decode + MoCo v2 recipe, per-image v2 and
    batched) against bare decoding of the same crops."""
    cfg, data, reader = trainer.cfg, trainer.data, trainer.store.reader
    sampler = MixBatchSampler(data.sizes, data.weights, cfg.batch_size, batches + 2, cfg.seed)
    out = {"loader_workers": workers}
    for kind in ("v2", "batched"):
        dataset = PairDataset(data, reader, CpuAugment(cfg.image_size, kind), cfg.seed)
        loader = DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=workers,
                            prefetch_factor=4 if workers else None)
        it = iter(loader)
        next(it)
        next(it)  # workers started and warm
        t0 = time.perf_counter()
        n = sum(2 * len(next(it)["a"]) for _ in range(batches))
        out[f"loader_{kind}_crops_per_s_per_core"] = n / (time.perf_counter() - t0) / max(1, workers)
        del it
    # The crops of exactly the batches the loader produced, read into memory first.
    pairs = [int(i) for step in range(2, batches + 2) for i in sampler.batch(step)[:, 0]]
    blobs = reader.get_many(data.table.refs(data.anchors[pairs])
                            + data.table.refs(data.positives[pairs]))
    t0 = time.perf_counter()
    for blob in blobs:
        decode_image(blob)
    decode = len(blobs) / (time.perf_counter() - t0)
    out["decode_crops_per_s_per_core"] = decode
    for kind in ("v2", "batched"):
        out[f"loader_{kind}_vs_decode"] = out[f"loader_{kind}_crops_per_s_per_core"] / decode
    return out


def main(argv=None) -> int:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", help="an existing store (default: a temporary synthetic one)")
    ap.add_argument("--positives", default="none")
    ap.add_argument("--objective", default="moco")
    ap.add_argument("--backbone", default="resnet50" if cuda else "resnet18")
    ap.add_argument("--image-size", type=int, default=128 if cuda else 64)
    ap.add_argument("--batch-size", type=int, default=256 if cuda else 16)
    ap.add_argument("--steps", type=int, default=50 if cuda else 10)
    ap.add_argument("--warmup", type=int, default=10 if cuda else 4,
                    help="untimed first steps (allocator and oneDNN/cuDNN warm-up)")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--crops", type=int, default=4096 if cuda else 512,
                    help="crops in the temporary store")
    ap.add_argument("--crop-size", type=int, default=128)
    ap.add_argument("--cpu-augment", default="v2", choices=("v2", "batched"),
                    help="recipe of the trainer's CPU loader")
    ap.add_argument("--no-amp", dest="amp", action="store_false",
                    help="fp32 even where bf16 autocast would be on (CUDA, CPUs with bf16)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(StorageConfig(workdir=args.workdir), create=False) if args.workdir \
            else make_store(Path(tmp) / "store", args.crops, args.crop_size)
        cfg = TrainConfig(objective=args.objective, positives=args.positives,
                          backbone=args.backbone, image_size=args.image_size,
                          batch_size=args.batch_size, steps=args.warmup + args.steps,
                          workers=args.workers, warmup_steps=0, min_gap=1,
                          cpu_augment=args.cpu_augment, amp=args.amp)
        trainer = Trainer(cfg, store, Path(tmp) / "out")
        synthetic = synthetic_rate(trainer, args.warmup, args.steps)
        trainer = Trainer(cfg, store, Path(tmp) / "out")  # fresh weights, queue and optimizer
        real = real_rate(trainer, args.warmup, args.steps)
        if trainer.gpu_augment:  # the other place to decode JPEGs for the GPU recipe
            other = dataclasses.replace(cfg, gpu_decode="workers")
            workers_decode = real_rate(Trainer(other, store, Path(tmp) / "out2"), args.warmup,
                                       args.steps)
        result = {"device": str(trainer.device), "gpu_augment": trainer.gpu_augment,
                  "objective": cfg.objective, "backbone": cfg.backbone,
                  "image_size": cfg.image_size, "batch_size": cfg.batch_size,
                  "amp_bf16": trainer.amp, "channels_last": trainer.channels_last,
                  "synthetic_pairs_per_s": synthetic, "real_pairs_per_s": real,
                  "real_vs_synthetic": real / synthetic, "gpu_decode": cfg.gpu_decode,
                  "crops": len(trainer.data.table),
                  "torch_threads": torch.get_num_threads()}
        if trainer.gpu_augment:
            result.update(real_workers_decode_pairs_per_s=workers_decode,
                          workers_decode_vs_synthetic=workers_decode / synthetic)
        if not cuda:
            result.update(loader_vs_decode(trainer, args.workers, max(4, args.steps)))
        store.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{cfg.objective} {cfg.backbone} {cfg.image_size}px batch {cfg.batch_size} on "
              f"{result['device']} ({trainer.precision}): synthetic {synthetic:.1f} "
              f"pairs/s, real data {real:.1f} pairs/s, ratio {real / synthetic:.3f}")
        if trainer.gpu_augment:
            print(f"JPEGs decoded by the loader workers instead of nvjpeg: {workers_decode:.1f} "
                  f"pairs/s, ratio {workers_decode / synthetic:.3f}")
        if not cuda:
            r = result
            print(f"loader crops/s per worker core ({args.workers} workers): v2 "
                  f"{r['loader_v2_crops_per_s_per_core']:.0f}, batched "
                  f"{r['loader_batched_crops_per_s_per_core']:.0f}; bare JPEG decode "
                  f"{r['decode_crops_per_s_per_core']:.0f} per core; ratios "
                  f"{r['loader_v2_vs_decode']:.3f} and {r['loader_batched_vs_decode']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
