"""Which torch device a job runs on: one rule for training, embedding and evaluation."""
from __future__ import annotations

from functools import cache
from pathlib import Path

from .errors import UsageError

# CPU flags (Linux /proc/cpuinfo names) of instructions that compute in bf16 natively.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def rank_device(spec: str, local_rank: int, gpus: int) -> str:
    """The device name for ``spec`` in the process of ``local_rank`` on a machine with ``gpus``
    visible GPUs. ``auto`` is this rank's GPU, or the CPU where there is none; ``cuda`` is this
    rank's GPU; ``cpu`` and ``cuda:N`` are taken as they are."""
    if spec.startswith("cuda") and gpus == 0:
        raise UsageError(f"device {spec!r} asked for, but CUDA is not available here")
    if spec not in ("auto", "cuda"):
        return spec
    if gpus == 0:
        return "cpu"
    if local_rank >= gpus:
        raise UsageError(f"process {local_rank} of this machine has no GPU of its own ({gpus} "
                         "visible): start at most that many processes per machine "
                         "(torchrun --nproc-per-node), pass --device cuda:0 where each process "
                         "sees only its own GPU, or pass --device cpu")
    return f"cuda:{local_rank}"


def pick_device(spec: str = "auto", local_rank: int = 0):
    """The torch device of ``spec`` (auto, cpu, cuda or cuda:N) for this process, with a clear
    error when CUDA is asked for and absent or when a rank has no GPU of its own."""
    import torch
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    try:
        return torch.device(rank_device(spec, local_rank, gpus))
    except RuntimeError as exc:
        raise UsageError(f"not a torch device: {spec!r} (auto, cpu, cuda or cuda:N)") from exc


@cache
def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes in bf16 natively (AVX-512 BF16 or AMX). Only then does bf16
    autocast speed training up on the CPU (2.2x for a ResNet-18 step at 96 px on the project's
    2-core AMD EPYC, docs/training.md); elsewhere oneDNN emulates bf16, slower than fp32.
    False where the flags cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def use_bf16(device) -> bool:
    """Whether bf16 autocast pays on ``device`` (a torch device): on CUDA, and on a CPU with
    native bf16."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())
