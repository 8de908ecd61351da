"""Backbones and the checkpoint format every package reads.

A vidmine checkpoint is a ``torch.save`` dict with plain tensors and primitives only (so
``torch.load(weights_only=True)`` opens it): ``backbone`` (torchvision name),
``feature_dim``, ``state_dict`` (the trunk: the torchvision model without its classifier)
and optional training state. A plain torchvision state dict supplied by a user loads too,
given the backbone name.
"""
from __future__ import annotations

import math
import pickle
from functools import cache, partial
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from vidmine.errors import UsageError

BACKBONES = {"resnet18": 512, "resnet50": 2048, "vgg16": 4096}
FORMAT = "vidmine-backbone-v1"


class CheckpointError(UsageError):
    """A checkpoint file that cannot be used: missing, truncated, not PyTorch's, or weights
    that do not fit the backbone it names."""


class SplitBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics come from ``splits`` groups of the batch, each on
    its own, as if each group were on its own GPU (group j: the j-th of ``splits`` equal,
    consecutive parts of the batch; batches are drawn in random order, so a group is a random
    subset, as the reference's interleaved groups are).

    MoCo in one process needs it in both encoders: with plain batch norm every key would be
    normalised together with its own query's batch, and the network can match pairs through
    those statistics instead of learning features. The parameters and running statistics
    are those of ``nn.BatchNorm2d``, so checkpoints load into plain networks.

    Consecutive parts are views of the batch in any memory layout; the reference's reshape
    of interleaved samples into channels copies a channels-last batch into the default
    layout, and every convolution after it then ran 1.5x slower (docs/training.md)."""

    def __init__(self, num_features: int, splits: int = 1, **kwargs):
        super().__init__(num_features, **kwargs)
        self.splits = splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = math.gcd(self.splits, x.shape[0])  # equal groups, even for an odd last batch
        if not self.training or groups == 1:
            return super().forward(x)
        out, means, variances = [], [], []
        for part in x.chunk(groups):
            mean, var = self.running_mean.clone(), self.running_var.clone()
            out.append(F.batch_norm(part, mean, var, self.weight, self.bias, True,
                                    self.momentum, self.eps))
            means.append(mean)
            variances.append(var)
        with torch.no_grad():
            self.running_mean.copy_(torch.stack(means).mean(0))
            self.running_var.copy_(torch.stack(variances).mean(0))
            self.num_batches_tracked.add_(1)
        return torch.cat(out)


@cache
def _taps_in_use(size: int, kernel: int, stride: int, padding: int) -> tuple[int, int] | None:
    """(first, last + 1) of the kernel taps along one axis that meet the input somewhere
    (the others multiply zero padding only), or None when every tap does."""
    out = (size + 2 * padding - kernel) // stride + 1
    # tap i reads input rows o * stride - padding + i for o in [0, out)
    used = [i for i in range(kernel)
            if max(0, -((i - padding) // stride)) <= min(out - 1, (size - 1 + padding - i) // stride)]
    if not used or (used[0], used[-1] + 1) == (0, kernel):
        return None
    first, end = used[0], used[-1] + 1
    if (size + 2 * (padding - first) - (end - first)) // stride + 1 != out:
        return None  # the cropped kernel would need uneven padding: keep the whole one
    return first, end


class TapCroppedConv2d(nn.Conv2d):
    """``nn.Conv2d`` without the kernel taps that, at this input size, only ever meet zero
    padding. At 32 px a ResNet's last stage works on 1x1 maps, where a 3x3 convolution is a
    1x1 one; oneDNN's fp32 CPU kernels took 105 ms for the forward and backward of the 3x3 form
    (batch 128, 512 channels) against 9 ms for the cropped one (docs/training.md). Exact: the
    taps left out multiply zeros, so they add nothing and their gradient is zero either way.
    The parameters are ``nn.Conv2d``'s: checkpoints load into plain networks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or isinstance(self.padding, str) or self.groups != 1 \
                or self.dilation != (1, 1):
            return super().forward(x)
        rows = _taps_in_use(x.shape[-2], self.kernel_size[0], self.stride[0], self.padding[0])
        cols = _taps_in_use(x.shape[-1], self.kernel_size[1], self.stride[1], self.padding[1])
        if rows is None and cols is None:
            return super().forward(x)
        (r0, r1), (c0, c1) = rows or (0, self.kernel_size[0]), cols or (0, self.kernel_size[1])
        return F.conv2d(x, self.weight[:, :, r0:r1, c0:c1], self.bias, self.stride,
                        (self.padding[0] - r0, self.padding[1] - c0))


class Trunk(nn.Module):
    """A torchvision network cut before its classifier: images -> pooled features. With
    ``bn_splits`` > 1 (ResNets) batch norm uses :class:`SplitBatchNorm2d`."""

    def __init__(self, name: str, bn_splits: int = 1):
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
        self.name = name
        self.trained_image_size: int | None = None   # load_backbone: from the checkpoint
        norm = {"norm_layer": partial(SplitBatchNorm2d, splits=bn_splits)} \
            if bn_splits > 1 and name.startswith("resnet") else {}
        net = getattr(torchvision.models, name)(weights=None, **norm)
        for module in net.modules():
            if type(module) is nn.Conv2d and max(module.kernel_size) > 1:
                module.__class__ = TapCroppedConv2d
        if name.startswith("resnet"):
            net.fc = nn.Identity()
        else:  # vgg16: keep fc6/fc7 (4096-d, as the 2015/2017 papers used), drop fc8
            net.classifier = net.classifier[:-1]
        self.net = net
        self.feature_dim = BACKBONES[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def save_backbone(path: str | Path, trunk: Trunk, **extra) -> None:
    payload = {"format": FORMAT, "backbone": trunk.name, "feature_dim": trunk.feature_dim,
               "state_dict": {k: v.detach().cpu() for k, v in trunk.state_dict().items()}}
    payload.update(extra)
    tmp = Path(f"{path}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_backbone(path: str | Path | None, name: str | None = None,
                  map_location: str | torch.device = "cpu") -> Trunk:
    """A trunk from a vidmine checkpoint or a torchvision state dict, with the input size it
    was trained at (``trained_image_size``; None where the file does not say); ``path=None``
    gives an untrained network (``name`` required), the floor every evaluation compares against."""
    if path is None:
        return Trunk(name or "resnet18")
    ckpt = read_checkpoint(path, map_location)
    trunk = trunk_from_checkpoint(ckpt, path, name)
    trunk.trained_image_size = trained_image_size(ckpt)
    return trunk


def trunk_from_checkpoint(ckpt: dict, path: str | Path, name: str | None = None) -> Trunk:
    """The trunk in ``ckpt``, a dict :func:`read_checkpoint` read from ``path``."""
    if ckpt.get("format") == FORMAT:
        if ckpt.get("backbone") not in BACKBONES:
            raise CheckpointError(f"{path} names an unknown backbone {ckpt.get('backbone')!r}")
        trunk = Trunk(ckpt["backbone"])
        try:
            trunk.load_state_dict(ckpt["state_dict"])
        except (RuntimeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: its weights do not fit its backbone label "
                                  f"{ckpt['backbone']!r} ({_first_line(exc)})") from exc
        return trunk
    if name is None:
        raise CheckpointError(f"{path} is a plain state dict: say which backbone it is "
                              "(--backbone)")
    trunk = Trunk(name)
    state = {k.removeprefix("module."): v for k, v in ckpt.get("state_dict", ckpt).items()}
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier.6."))}
    missing, unexpected = trunk.net.load_state_dict(state, strict=False)
    if unexpected or len(missing) > 0:
        raise CheckpointError(f"{path} does not fit {name}: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    return trunk


def trained_image_size(ckpt: dict) -> int | None:
    """The input size the checkpoint's network was trained at; None when it does not say
    (a plain state dict, or a checkpoint saved outside the trainer)."""
    config = ckpt.get("config")
    size = config.get("image_size") if isinstance(config, dict) else None
    return size if type(size) is int and size > 0 else None


def _first_line(exc: BaseException) -> str:
    # torch's load errors advise loading with weights_only=False, which would run whatever
    # the file holds; keep only the words that name what it met.
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(exc).splitlines()
             if line.strip() and not line.strip().startswith(boilerplate)]
    text = lines[0] if lines else type(exc).__name__
    return text.split(" In PyTorch 2.6")[0].split(" This is an internal")[0][:200]


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The dict saved in a checkpoint file, tensors only (``weights_only``: a pickled
    program in a hostile file never runs), or one-line :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # a pickle of more than tensors, or not a pickle
        raise CheckpointError(f"{path} is not a checkpoint of tensors only "
                              f"({_first_line(exc)}); vidmine never runs code from a "
                              "checkpoint") from exc
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"{path} is not a loadable PyTorch checkpoint (truncated, or "
                              f"not one: {_first_line(exc)})") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} holds no state dict")
    return ckpt
