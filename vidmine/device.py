"""Which torch device a job runs on: one rule for training, embedding and evaluation."""
from __future__ import annotations

from .errors import UsageError


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
