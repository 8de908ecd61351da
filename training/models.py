"""The two trained networks around a shared trunk (training.backbones): a triplet-Siamese
embedding and MoCo v2. Each ``forward`` returns its loss, so DDP wraps either unchanged."""
from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .backbones import CheckpointError, Trunk, load_backbone
from .losses import forbidden_negatives, info_nce, shares_cluster, shares_owner, triplet_loss


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


# Owner of a queue slot no key has filled yet: no track or video id equals it.
NO_OWNER = torch.iinfo(torch.long).min


class MoCo(nn.Module):
    """MoCo v2 (He et al. 2020; Chen et al. 2020), after facebookresearch/moco/builder.py.

    Batch norm must not let a key share statistics with its own query. Across DDP ranks the
    keys are shuffled between processes, as in the reference. In one process (``bn_splits``
    > 1) both encoders normalise in groups of the batch and the keys are shuffled before
    theirs, as the reference's single-GPU demo does: key i then lies in a random group,
    never in the group its query was normalised with.

    ``exclude`` ("track" or "video") keeps, beside each key in the queue, the track or video
    of its crop, and leaves out of a query's negatives the keys of its pair's own tracks or
    videos: the reference treats every other image as another instance, so a crop's own
    object under another view is pushed away (docs/training.md, *False negatives*).
    "cluster" leaves out the keys of the pair's own tracks and graph clusters, the negatives
    the triplet loss forbids: a transitive positive comes from the query's cluster, whose
    other members would otherwise be pushed away by the same loss."""

    def __init__(self, backbone: str, dim: int = 128, queue: int = 65536, momentum: float = 0.999,
                 temperature: float = 0.2, mlp: bool = True, bn_splits: int = 1,
                 exclude: str = "none"):
        super().__init__()
        self.trunk: Trunk = Trunk(backbone, bn_splits)
        self.encoder_q = nn.Sequential(self.trunk, projection_head(self.trunk.feature_dim, dim, mlp))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for param in self.encoder_k.parameters():
            param.requires_grad = False
        self.momentum, self.temperature = momentum, temperature
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.exclude = exclude
        if exclude != "none":
            self.register_buffer("queue_owner", torch.full((queue,), NO_OWNER, dtype=torch.long))
        if exclude == "cluster":
            self.register_buffer("queue_cluster", torch.full((queue,), NO_OWNER, dtype=torch.long))

    @torch.no_grad()
    def _momentum_update(self) -> None:
        q = list(self.encoder_q.parameters())
        k = list(self.encoder_k.parameters())
        torch._foreach_lerp_(k, q, 1 - self.momentum)

    @torch.no_grad()
    def _keys(self, im_k: torch.Tensor) -> torch.Tensor:
        """Keys with shuffled batch norm (see the class): across DDP ranks, or in one process
        through the split batch norm of a randomly permuted batch."""
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
        k = self.encoder_k(im_k[perm])
        out = torch.empty_like(k)
        out[perm] = k
        return F.normalize(out, dim=1)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor, owners: torch.Tensor | None = None,
                 clusters: torch.Tensor | None = None) -> None:
        keys = concat_all_gather(keys.float())
        size = self.queue.shape[1]
        idx = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % size
        self.queue[:, idx] = keys.T
        if owners is not None:
            self.queue_owner[idx] = concat_all_gather(owners)
        if clusters is not None:
            self.queue_cluster[idx] = concat_all_gather(clusters)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % size)

    def forward(self, im_q, im_k, meta: dict | None = None) -> torch.Tensor:
        q = F.normalize(self.encoder_q(im_q), dim=1)
        self._momentum_update()
        k = self._keys(im_k)
        own = key_owner = key_cluster = None
        if self.exclude != "none":
            field = "video" if self.exclude == "video" else "group"
            key_owner = meta[f"p_{field}"]
            own = shares_owner(self.queue_owner, meta[f"a_{field}"], key_owner)
        if self.exclude == "cluster":
            key_cluster = meta["p_cluster"]
            own |= shares_cluster(self.queue_cluster, meta["a_cluster"], key_cluster)
        loss = info_nce(q, k, self.queue.clone().detach(), self.temperature, own)
        self._enqueue(k, key_owner, key_cluster)
        return loss


def moco_schedule(steps: int, batch: int, crops: int, momentum: float | None = None,
                  queue: int | None = None, world: int = 1) -> tuple[float, int]:
    """Key momentum and queue length fitted to the run (each where the setting is None).

    The reference values (0.999, 65536) suit 200 epochs of ImageNet. Over a short run they
    leave the key encoder near its random start (0.999^1000 = 37 % of the initial weights
    remain after 1,000 steps) and the queue full of random vectors (65,536 keys need 1,024
    steps of 64). The single-GPU reference demo uses 0.99 and 4,096 for ~20k steps. Here:
    m = 1 - 10 / steps within [0.9, 0.999], so under 0.005 % of the start remains at the end;
    K = the largest power of two within 1/8 of the keys the run sees and 1/8 of the crops,
    so the queue turns over 8 times and rarely holds the anchor's own image, in [256, 65536].
    """
    m = momentum if momentum is not None else min(0.999, max(0.9, 1.0 - 10.0 / max(1, steps)))
    if queue is None:
        cap = max(1, min(65536, steps * batch * world // 8, crops // 8))
        queue = max(256, 1 << (cap.bit_length() - 1))
    return m, int(queue)


def bn_splits(cfg, world: int = 1) -> int:
    """Batch-norm groups of MoCo in one process: ``cfg.bn_splits``, or by default groups of
    32 (the per-GPU batch of the reference's 8 GPUs at 256), at least two; none under DDP,
    where each process normalises its own share of the batch."""
    if world > 1:
        return 1
    return cfg.bn_splits or max(2, cfg.batch_size // 32)


def start_from(model: nn.Module, path: str, backbone: str) -> None:
    """Copy the trunk of the checkpoint at ``path`` into ``model`` (into both MoCo encoders:
    the key encoder starts as the query encoder does); the heads stay random."""
    trunk = load_backbone(path, backbone)
    if trunk.name != backbone:
        raise CheckpointError(f"{path} holds a {trunk.name}, not the {backbone} being trained")
    model.trunk.net.load_state_dict(trunk.net.state_dict())
    if isinstance(model, MoCo):
        model.encoder_k.load_state_dict(model.encoder_q.state_dict())


def build_model(cfg, momentum: float = 0.999, queue: int = 65536, splits: int = 1) -> nn.Module:
    """The network of ``cfg``; MoCo's momentum, queue and batch-norm groups as resolved by
    the trainer (:func:`moco_schedule`, :func:`bn_splits`)."""
    if cfg.objective == "triplet":
        return TripletNet(cfg.backbone, cfg.embed_dim, cfg.margin, cfg.negatives)
    return MoCo(cfg.backbone, cfg.moco_dim, queue, momentum, cfg.temperature, cfg.mlp, splits,
                cfg.queue_exclude)
