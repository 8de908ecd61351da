"""The training loop: data -> (GPU decode and augmentation) -> model -> SGD, with checkpoints.

* Mixed precision: bf16 autocast on CUDA and on CPUs with bf16 instructions (no loss scaling
  needed); channels-last with it.
* Schedule: linear warm-up then cosine to zero; lr scales with the global batch / 256.
* Exact resume: the sampler and every random draw of a step (augmentation, MoCo's batch
  shuffle, random negatives) are seeded by (seed, rank, step), so a checkpoint needs only
  the model (queue included), the optimizer, the scheduler and the step.
* Checkpoints every ``checkpoint_every`` steps and on SIGTERM, written atomically in the
  training.backbones format (``load_backbone`` reads any of them) plus a ``training`` entry.
* DDP when started by torchrun (NCCL on GPUs, gloo on CPU); rank 0 writes files and logs.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from vidmine.config import to_dict
from vidmine.device import pick_device, use_bf16
from vidmine.errors import UsageError
from vidmine.progress import progress_bar
from vidmine.storage.db import RunRecord
from vidmine.storage.store import BadCrops, Store

from .augment import BatchAugment, CpuAugment, keep_decoded, normalize, upload_images
from .backbones import CheckpointError, read_checkpoint, save_backbone
from .config import TrainConfig
from .data import MixBatchSampler, PairDataset, batch_seed, load_pair_data
from .models import bn_splits, build_model, moco_schedule, start_from

META = ("a_group", "p_group", "a_video", "p_video", "a_cluster", "p_cluster")


class TrainingDiverged(UsageError):
    """The loss became nan or inf: a learning rate too high for the batch, most often."""
# Settings that shape the model or the data stream: a resumed job must keep them.
RESUME_FIXED = ("objective", "backbone", "positives", "image_size", "batch_size", "embed_dim",
                "moco_dim", "moco_queue", "mlp", "seed", "split", "pairs_run", "min_gap", "max_gap",
                "queue_exclude")


def warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def init_distributed(device_spec: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; (0, 1, device) without it. The
    backend follows the device this process trains on: NCCL for a GPU, gloo for the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0
    device = pick_device(device_spec, local_rank)
    if world == 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


class Trainer:
    def __init__(self, cfg: TrainConfig, store: Store, out_dir: str | Path, resume: bool = False):
        self.cfg, self.store, self.out = cfg, store, Path(out_dir)
        last = self.out / "last.pt"
        if resume and not last.is_file():
            raise UsageError(f"nothing to resume: no checkpoint at {last}")
        if not resume and last.is_file():
            raise UsageError(f"{self.out} already holds a checkpoint; pass --resume to continue "
                             "it, or choose another --out")
        self.rank, self.world, self.device = init_distributed(cfg.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.cuda.set_device(self.device)
        self.gpu_augment = cfg.gpu_augment == "on" or (cfg.gpu_augment == "auto" and self.cuda)
        if self.gpu_augment and not self.cuda:
            raise UsageError("--gpu-augment on needs a CUDA device")
        self.decode_in_workers = self.gpu_augment and cfg.gpu_decode == "workers"
        # bf16 only where the hardware computes it; channels-last pays only with it (on the CPU
        # oneDNN's fp32 convolutions are 8 % slower channels-last, its bf16 ones 18 % faster).
        self.amp = cfg.amp and use_bf16(self.device)
        self.channels_last = cfg.channels_last and self.amp
        self.precision = "bf16" if self.amp else "fp32"
        self.data = load_pair_data(store, cfg)
        saved = read_checkpoint(last, self.device) if resume else None
        self.moco = self._moco_settings(saved)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, **self.moco)
        if cfg.init and saved is None:  # a resumed run's weights come from its checkpoint
            start_from(model, cfg.init, cfg.backbone)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.net = model
        self.model = DistributedDataParallel(model, device_ids=[self.device] if self.cuda else None) \
            if self.world > 1 else model
        lr = cfg.lr * cfg.batch_size * self.world / 256
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(cfg.warmup_steps, cfg.steps))
        self.step = 0
        self.augment = BatchAugment.recipe(cfg.image_size, cfg.colour_augment, cfg.crop_scale)
        self.bad_crops = BadCrops("vidmine-train", total=len(self.data.table))
        self._stop = False
        if saved is not None:
            self._load(last, saved)

    def _moco_settings(self, saved: dict | None) -> dict:
        """MoCo's momentum, queue and batch-norm groups: those of the checkpoint being
        resumed, else fitted to this run (training.models.moco_schedule), with a warning
        when settings given by hand cannot work in a run this short."""
        cfg = self.cfg
        if cfg.objective != "moco":
            return {}
        if saved is not None and "moco" in saved.get("training", {}):
            return dict(saved["training"]["moco"])
        crops = len(np.unique(np.concatenate([self.data.anchors, self.data.positives])))
        momentum, queue = moco_schedule(cfg.steps, cfg.batch_size, crops, cfg.moco_momentum,
                                        cfg.moco_queue, self.world)
        if self.rank == 0:
            left = momentum ** cfg.steps
            if left > 0.05:
                print(f"vidmine-train: warning: moco_momentum {momentum} leaves {left:.0%} of the "
                      f"key encoder's random start after {cfg.steps} steps (leave it auto)",
                      file=sys.stderr)
            if queue > cfg.steps * cfg.batch_size * self.world // 2:
                print(f"vidmine-train: warning: a queue of {queue} keys is refilled less than "
                      f"twice in {cfg.steps} steps of {cfg.batch_size} (leave moco_queue auto)",
                      file=sys.stderr)
        return {"momentum": momentum, "queue": queue, "splits": bn_splits(cfg, self.world)}

    # -- data ---------------------------------------------------------------------------
    def loader(self) -> DataLoader:
        cfg = self.cfg
        sampler = MixBatchSampler(self.data.sizes, self.data.weights, cfg.batch_size, cfg.steps,
                                  cfg.seed, self.rank, start_step=self.step)
        if not self.gpu_augment:
            augment = CpuAugment(cfg.image_size, cfg.cpu_augment, cfg.colour_augment,
                                 cfg.crop_scale)
        else:  # None: the bytes travel, for nvjpeg
            augment = keep_decoded if self.decode_in_workers else None
        dataset = PairDataset(self.data, self.store.reader, augment, cfg.seed, self.rank)
        # Decoded crops are joined into one buffer before their copy, so pinning each is waste.
        return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=cfg.workers,
                          pin_memory=self.cuda and not self.decode_in_workers,
                          prefetch_factor=4 if cfg.workers else None)

    def _note_bad(self, crop_ids: torch.Tensor) -> None:
        """Name each crop the loader could not read, once; fail past 1 % of the crops."""
        for crop_id in crop_ids.flatten().tolist():
            if crop_id >= 0:
                self.bad_crops.add(crop_id, "cannot be read or decoded")

    def seed_step(self, step: int) -> None:
        """Every random draw of the step on the trainer's side comes from this seed."""
        torch.manual_seed(batch_seed(self.cfg.seed, self.rank, step) + 1)

    def prepare(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """A loader batch -> normalised device images (a, p) and the negative-rule ids."""
        meta = {k: batch[k].to(self.device, non_blocking=True) for k in META}
        if self.decode_in_workers:
            images = upload_images(batch["a"] + batch["p"], self.device)
            x = normalize(self.augment(images, None), self.channels_last)
        elif self.gpu_augment:
            x = self.augment.decode_and_augment(batch["a"] + batch["p"], self.device, None,
                                                self.channels_last)
        else:
            x = normalize(torch.cat([batch["a"], batch["p"]]).to(self.device, non_blocking=True),
                          self.channels_last)
        a, p = x.chunk(2)
        return a, p, meta

    # -- optimisation -------------------------------------------------------------------
    def train_step(self, a: torch.Tensor, p: torch.Tensor, meta: dict) -> torch.Tensor:
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.amp):
            loss = self.model(a, p, meta)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return loss.detach()

    # -- checkpoints --------------------------------------------------------------------
    def save(self, path: Path) -> None:
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        save_backbone(path, self.net.trunk, objective=self.cfg.objective, step=self.step,
                      config=to_dict(self.cfg),
                      training={"model": self.net.state_dict(), "moco": self.moco,
                                "optimizer": self.optimizer.state_dict(),
                                "scheduler": self.scheduler.state_dict(), "step": self.step})

    def _load(self, path: Path, ckpt: dict) -> None:
        # A checkpoint from before a setting existed was trained with its default.
        old = {k: getattr(TrainConfig, k) for k in RESUME_FIXED} | ckpt.get("config", {})
        changed = [k for k in RESUME_FIXED if old.get(k) != getattr(self.cfg, k)]
        if changed:
            raise UsageError(f"cannot resume {path} with changed settings {changed}; "
                             f"it was trained with {({k: old.get(k) for k in changed})}")
        try:
            state = ckpt["training"]
            self.net.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.step = int(state["step"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"cannot resume {path}: not a training checkpoint of these "
                                  f"settings ({type(exc).__name__})") from exc

    def _on_sigterm(self, signum, frame) -> None:
        self._stop = True

    def _should_stop(self) -> bool:
        if self.world == 1:
            return self._stop
        flag = torch.tensor([int(self._stop)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops at the same step
        return bool(flag.item())

    # -- the loop -----------------------------------------------------------------------
    def fit(self, progress: bool = True, until: int | None = None) -> dict:
        """Train to ``cfg.steps``, or only to step ``until`` of that schedule (a job split
        over several time-limited allocations); returns a summary of the run."""
        cfg = self.cfg
        end = min(cfg.steps, until) if until is not None else cfg.steps
        lead = self.rank == 0
        record = self.store.index.run("train", {**to_dict(cfg), "out": str(self.out),
                                                "world_size": self.world,
                                                "resumed_from_step": self.step}) \
            if lead else contextlib.nullcontext(RunRecord(id=-1))
        with record as run:
            return self._fit(run, end, progress and lead)

    def _fit(self, run: RunRecord, end: int, progress: bool) -> dict:
        cfg, lead = self.cfg, self.rank == 0
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        log = _Log(self.out, enabled=lead)
        bar = progress_bar(total=cfg.steps, initial=self.step, disable=not progress,
                           desc=f"train {cfg.objective}", unit="step")
        status, start_step, t0 = "done", self.step, time.perf_counter()
        window_loss, window_n, window_t = torch.zeros((), device=self.device), 0, t0
        run.summary = {"step": self.step}
        try:
            batches = iter(self.loader())
            while self.step < end:
                if self._should_stop():
                    status = "interrupted"
                    break
                try:
                    batch = next(batches)
                except RuntimeError:
                    if not self._stop:  # workers killed along with us by a group SIGTERM
                        raise
                    continue
                self._note_bad(batch["bad"])
                if batch.get("empty"):
                    continue
                self.seed_step(self.step)
                loss = self.train_step(*self.prepare(batch))
                window_loss += loss
                window_n += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    mean = float(window_loss) / window_n
                    if not math.isfinite(mean):
                        raise TrainingDiverged(
                            f"the loss is {mean} at step {self.step}: training diverged; "
                            f"lower --lr (it was {cfg.lr})")
                    rate = window_n * cfg.batch_size * self.world / (now - window_t)
                    log.write(self.step, mean, self.scheduler.get_last_lr()[0], rate, now - t0)
                    bar.set_postfix(loss=f"{mean:.4f}", pairs_s=f"{rate:.0f}")
                    window_loss.zero_()
                    window_n, window_t = 0, now
                    run.summary["step"] = self.step
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save(self.out / "last.pt")
        finally:
            signal.signal(signal.SIGTERM, previous)
            bar.close()
            log.close()
        if status == "done" and self.step < cfg.steps:
            status = "stopped"
        self.save(self.out / "last.pt")
        if status == "done" and lead:
            _link(self.out / "last.pt", self.out / "final.pt")
        elapsed = time.perf_counter() - t0
        summary = {"status": status, "step": self.step, "steps": cfg.steps,
                   "world_size": self.world, "device": str(self.device),
                   "precision": self.precision, "gpu_augment": self.gpu_augment,
                   "pairs_per_s": (self.step - start_step) * cfg.batch_size * self.world
                   / max(elapsed, 1e-9),
                   "checkpoint": str(self.out / ("final.pt" if status == "done" else "last.pt")),
                   "pairs": self.data.sizes, "moco": self.moco, "run_id": run.id if lead else None}
        run.status, run.summary = status, summary
        return summary


def _link(src: Path, dst: Path) -> None:
    """``dst`` becomes the same file as ``src`` (a hard link; a copy where links fail). A
    later save of ``src`` replaces it by rename, so ``dst`` keeps this content."""
    tmp = dst.with_suffix(".tmp-link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    tmp.replace(dst)


class _Log:
    """log.csv (appended across resumes) and TensorBoard scalars when tensorboard exists."""

    def __init__(self, out: Path, enabled: bool):
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        path = out / "log.csv"
        new = not path.is_file()
        self.fh = path.open("a", newline="")
        self.csv = csv.writer(self.fh)
        if new:
            self.csv.writerow(["step", "loss", "lr", "pairs_per_s", "elapsed_s"])
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out / "tb"))
        except ImportError:
            pass

    def write(self, step: int, loss: float, lr: float, rate: float, elapsed: float) -> None:
        if not self.enabled:
            return
        self.csv.writerow([step, f"{loss:.6f}", f"{lr:.6g}", f"{rate:.1f}", f"{elapsed:.2f}"])
        self.fh.flush()
        if self.tb is not None:
            self.tb.add_scalar("train/loss", loss, step)
            self.tb.add_scalar("train/lr", lr, step)
            self.tb.add_scalar("train/pairs_per_s", rate, step)

    def close(self) -> None:
        if self.enabled:
            self.fh.close()
            if self.tb is not None:
                self.tb.close()
