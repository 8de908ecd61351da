"""Which torch device a job runs on: one rule for training, embedding and evaluation."""
from __future__ import annotations

from .errors import UsageError


def pick_device(spec: str = "auto", local_rank: int = 0):
    """``auto``: the GPU of this rank when CUDA is there, else the CPU; ``cpu``, ``cuda`` or
    ``cuda:N`` as asked, with a clear error when CUDA is asked for and absent."""
    import torch
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {spec!r} asked for, but CUDA is not available here")
    try:
        return torch.device(spec)
    except RuntimeError as exc:
        raise UsageError(f"not a torch device: {spec!r} (auto, cpu, cuda or cuda:N)") from exc
