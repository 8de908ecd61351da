"""The two trained networks around a shared trunk (training.backbones): a triplet-Siamese
embedding and MoCo v2. Each ``forward`` returns its loss, so DDP wraps either unchanged."""
from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .backbones import Trunk
from .losses import forbidden_negatives, info_nce, triplet_loss


class TripletNet(nn.Module):
    """Trunk + one linear layer (1024-d in the 2015 paper); anchors and positives go through
    the network together, so batch norm sees the whole batch."""

    def __init__(self, backbone: str, embed_dim: int = 1024, margin: float = 0.5, negatives: int = 4):
        super().__init__()
        self.trunk: Trunk = Trunk(backbone)
        self.embed = nn.Linear(self.trunk.feature_dim, embed_dim)
        self.margin, self.negatives = margin, negatives

    def forward(self, a, p, meta: dict) -> torch.Tensor:
        z = self.embed(self.trunk(torch.cat([a, p])))
        forbidden = forbidden_negatives(meta["a_group"], meta["p_group"], meta["a_cluster"],
                                        meta["p_cluster"])
        za, zp = z.chunk(2)
        return triplet_loss(za, zp, forbidden, self.margin, self.negatives)


def projection_head(in_dim: int, out_dim: int, mlp: bool) -> nn.Module:
    if not mlp:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    if _world() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(_world())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class MoCo(nn.Module):
    """MoCo v2 (He et al. 2020; Chen et al. 2020), after facebookresearch/moco/builder.py."""

    def __init__(self, backbone: str, dim: int = 128, queue: int = 65536, momentum: float = 0.999,
                 temperature: float = 0.2, mlp: bool = True):
        super().__init__()
        self.trunk: Trunk = Trunk(backbone)
        self.encoder_q = nn.Sequential(self.trunk, projection_head(self.trunk.feature_dim, dim, mlp))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for param in self.encoder_k.parameters():
            param.requires_grad = False
        self.momentum, self.temperature = momentum, temperature
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _momentum_update(self) -> None:
        q = list(self.encoder_q.parameters())
        k = list(self.encoder_k.parameters())
        torch._foreach_lerp_(k, q, 1 - self.momentum)

    @torch.no_grad()
    def _keys(self, im_k: torch.Tensor) -> torch.Tensor:
        """Keys with shuffled batch norm: a key never shares BN statistics with its own query
        batch, or the network can match pairs through the statistics. Across DDP ranks as
        in the reference; in one process, over two halves of a random permutation."""
        world = _world()
        if world > 1:
            gathered = concat_all_gather(im_k)
            perm = torch.randperm(len(gathered), device=im_k.device)
            dist.broadcast(perm, src=0)
            mine = perm.view(world, -1)[dist.get_rank()]
            k = F.normalize(self.encoder_k(gathered[mine]), dim=1)
            k_all = concat_all_gather(k)
            out = torch.empty_like(k_all)
            out[perm] = k_all
            return out.view(world, -1, k.shape[1])[dist.get_rank()]
        perm = torch.randperm(len(im_k), device=im_k.device)
        k = torch.cat([self.encoder_k(chunk) for chunk in im_k[perm].chunk(2)])
        out = torch.empty_like(k)
        out[perm] = k
        return F.normalize(out, dim=1)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        keys = concat_all_gather(keys.float())
        size = self.queue.shape[1]
        idx = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % size
        self.queue[:, idx] = keys.T
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % size)

    def forward(self, im_q, im_k, meta: dict | None = None) -> torch.Tensor:
        q = F.normalize(self.encoder_q(im_q), dim=1)
        self._momentum_update()
        k = self._keys(im_k)
        loss = info_nce(q, k, self.queue.clone().detach(), self.temperature)
        self._enqueue(k)
        return loss


def build_model(cfg) -> nn.Module:
    if cfg.objective == "triplet":
        return TripletNet(cfg.backbone, cfg.embed_dim, cfg.margin, cfg.negatives)
    return MoCo(cfg.backbone, cfg.moco_dim, cfg.moco_queue, cfg.moco_momentum, cfg.temperature,
                cfg.mlp)
