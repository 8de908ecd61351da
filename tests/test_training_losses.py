"""Objectives: triplet ranking (2015 code) and MoCo v2 InfoNCE, queue and momentum encoder."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidmine.training.losses import forbidden_negatives, info_nce, select_negatives, triplet_loss
from vidmine.training.models import MoCo, TripletNet


def _one_hot_pairs(b: int, dim: int = 16, jitter: float = 0.0):
    """Pair i = (e_i, e_i + noise): positives nearly identical, other pairs orthogonal."""
    a = torch.eye(dim)[:b]
    p = a + jitter * torch.randn(b, dim, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(b)
    none = torch.full((b,), -1)
    return a, p, forbidden_negatives(ids, ids, none, none)


def test_triplet_zero_when_positives_closer_by_the_margin():
    a, p, forbidden = _one_hot_pairs(6, jitter=0.01)
    # D(a,p) ~ 0, D(a,n) = D(p,n) ~ 1 for every negative: 1 > 0 + 0.5, no loss.
    assert triplet_loss(a, p, forbidden, margin=0.5, k=4).item() == pytest.approx(0.0, abs=1e-6)
    # With margin 1.5 each (pair, negative) slot costs two hinges of exactly 0.5.
    a, p, forbidden = _one_hot_pairs(6)
    assert triplet_loss(a, p, forbidden, margin=1.5, k=4).item() == pytest.approx(1.0, abs=1e-5)


def test_triplet_hinge_is_symmetric():
    """A negative close to the positive but far from the anchor is still penalised."""
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    p = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # D(a0, p0) = 1
    ids, none = torch.arange(2), torch.full((2,), -1)
    forbidden = forbidden_negatives(ids, ids, none, none)
    # Pair 0's negatives are a1 = p1 = e3: D(a0,n) = 1, D(p0,n) = 1. With margin 0.5 each
    # hinge is 1 - 1 + 0.5 = 0.5; pair 1 (D(a,p) = 0) against e1 or e2: 0 - 1 + 0.5 < 0.
    loss = triplet_loss(a, p, forbidden, margin=0.5, k=2)
    assert loss.item() == pytest.approx((2 * 1.0 + 2 * 0.0) / 4, abs=1e-6)


def test_triplet_gradient_moves_pairs_together():
    a, p, forbidden = _one_hot_pairs(6, jitter=0.5)
    a.requires_grad_(True)
    p.requires_grad_(True)
    lr = 0.5
    before = triplet_loss(a, p, forbidden, margin=1.0)
    before.backward()
    with torch.no_grad():
        after = triplet_loss(a - lr * a.grad, p - lr * p.grad, forbidden, margin=1.0)
    assert after < before


def test_negatives_never_from_the_pairs_tracks_or_clusters():
    g = torch.Generator().manual_seed(1)
    b = 32
    a_group, p_group = torch.randint(0, 10, (b,), generator=g), torch.randint(0, 10, (b,), generator=g)
    a_cl, p_cl = torch.randint(-1, 5, (b,), generator=g), torch.randint(-1, 5, (b,), generator=g)
    forbidden = forbidden_negatives(a_group, p_group, a_cl, p_cl)
    closeness = torch.randn(b, 2 * b, generator=g)
    idx, valid = select_negatives(closeness, forbidden, 4, g)
    groups, cl = torch.cat([a_group, p_group]), torch.cat([a_cl, p_cl])
    assert valid.any()
    for i in range(b):
        for n, ok in zip(idx[i].tolist(), valid[i].tolist()):
            if not ok:
                continue
            assert groups[n] not in (a_group[i], p_group[i])
            assert cl[n] < 0 or cl[n] not in (a_cl[i], p_cl[i])
            assert n not in (i, i + b)
        allowed = (~forbidden[i]).nonzero().flatten()
        assert len(set(idx[i][valid[i]].tolist())) == min(4, len(allowed))  # distinct picks
        if len(allowed) >= 2:  # the hard half is the closest allowed candidates
            best = allowed[closeness[i, allowed].argsort(descending=True)[:2]]
            assert set(idx[i, :2].tolist()) == set(best.tolist())


def test_random_negatives_follow_the_generator():
    forbidden = torch.zeros(4, 64, dtype=torch.bool)
    closeness = torch.zeros(4, 64)
    picks = [select_negatives(closeness, forbidden, 4, torch.Generator().manual_seed(s))[0][:, 2:]
             for s in (0, 0, 1)]
    assert torch.equal(picks[0], picks[1]) and not torch.equal(picks[0], picks[2])


def test_too_few_allowed_negatives_are_flagged_invalid():
    groups = torch.tensor([0, 0, 0, 1])
    none = torch.full((4,), -1)
    forbidden = forbidden_negatives(groups, groups, none, none)
    _, valid = select_negatives(torch.randn(4, 8), forbidden, 4)
    assert valid[:3].sum(1).tolist() == [2, 2, 2]  # pairs 0-2 may use only a3 and p3
    assert valid[3].sum().item() == 4              # pair 3 has six allowed candidates
    assert torch.isfinite(triplet_loss(torch.randn(4, 8), torch.randn(4, 8), forbidden))


def test_info_nce_matches_the_direct_formula():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    k = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    queue = F.normalize(torch.randn(8, 30, generator=g), dim=0)
    t = 0.2
    direct = 0.0
    for i in range(5):
        pos = math.exp(float(q[i] @ k[i]) / t)
        neg = sum(math.exp(float(q[i] @ queue[:, j]) / t) for j in range(30))
        direct += -math.log(pos / (pos + neg))
    assert info_nce(q, k, queue, t).item() == pytest.approx(direct / 5, rel=1e-5)
    # Excluded negatives drop out of the sum, as if they were not in the queue.
    excluded = torch.zeros(5, 30, dtype=torch.bool)
    excluded[:, 10:] = True
    assert info_nce(q, k, queue, t, excluded).item() == pytest.approx(
        info_nce(q, k, queue[:, :10], t).item(), rel=1e-5)


def _same_weights_with_queue(model: MoCo, slots: slice) -> MoCo:
    """A MoCo with ``model``'s weights whose queue is only ``model``'s keys in ``slots``, and
    that leaves none out."""
    keys = model.queue[:, slots]
    plain = MoCo("resnet18", dim=keys.shape[0], queue=keys.shape[1])
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("queue")},
                          strict=False)
    plain.queue.copy_(keys)
    return plain


@pytest.mark.parametrize("exclude,field", [("video", "video"), ("track", "group")])
def test_moco_leaves_the_pairs_own_keys_out_of_its_negatives(exclude, field):
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    # Every pair owns 1 and 2 (the query's and the key's), one way round or the other.
    meta = {f"a_{field}": torch.tensor([1, 2, 1, 2]), f"p_{field}": torch.tensor([2, 1, 2, 1])}
    masked = MoCo("resnet18", dim=8, queue=8, exclude=exclude)
    masked.queue_owner.copy_(torch.tensor([1, 1, 2, 2, 1, 2, 9, 9]))
    # The same network with a queue of only the two keys no pair owns (video or track 9).
    plain = _same_weights_with_queue(masked, slice(6, None))
    assert masked(x, y, meta).item() == pytest.approx(plain(x, y, meta).item(), rel=1e-5)
    # Its keys went into the queue with their owners (the key's side of each pair).
    assert masked.queue_owner[:4].tolist() == [2, 1, 2, 1]


def test_moco_cluster_exclusion_leaves_out_the_pairs_tracks_and_clusters():
    """As the triplet loss forbids: keys of the pair's tracks or of its (real) clusters."""
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    meta = {"a_group": torch.tensor([1, 2, 1, 2]), "p_group": torch.tensor([2, 1, 2, 1]),
            "a_cluster": torch.tensor([7, -1, 7, -1]), "p_cluster": torch.tensor([-1, 7, -1, 7])}
    masked = MoCo("resnet18", dim=8, queue=8, exclude="cluster")
    # slots 0-1: own tracks; 2-3: other tracks of cluster 7; 4-5: crops in no cluster (-1),
    # which must stay negatives although half the pairs' crops are in no cluster either;
    # 6-7: other tracks, other cluster
    masked.queue_owner.copy_(torch.tensor([1, 2, 5, 6, 5, 6, 9, 9]))
    masked.queue_cluster.copy_(torch.tensor([3, 3, 7, 7, -1, -1, 3, 3]))
    plain = _same_weights_with_queue(masked, slice(4, None))
    assert masked(x, y, meta).item() == pytest.approx(plain(x, y, meta).item(), rel=1e-5)
    assert masked.queue_owner[:4].tolist() == [2, 1, 2, 1]
    assert masked.queue_cluster[:4].tolist() == [-1, 7, -1, 7]


def test_moco_queue_wraps_and_key_encoder_follows_by_momentum():
    torch.manual_seed(0)
    model = MoCo("resnet18", dim=8, queue=10, momentum=0.9)
    keys = F.normalize(torch.randn(4, 8), dim=1)
    for _ in range(3):  # 12 keys into a queue of 10: the last two overwrite slots 0 and 1
        model._enqueue(keys)
    assert model.queue_ptr.item() == 2
    assert torch.allclose(model.queue[:, 0], keys[2]) and torch.allclose(model.queue[:, 9], keys[1])
    q0 = next(model.encoder_q.parameters())
    k0 = next(model.encoder_k.parameters())
    with torch.no_grad():
        q0.add_(1.0)
    expected = 0.9 * k0.detach().clone() + 0.1 * q0.detach()
    model._momentum_update()
    assert torch.allclose(k0, expected, atol=1e-6)
    assert not any(p.requires_grad for p in model.encoder_k.parameters())


def test_models_return_a_loss_with_gradients_only_for_the_query_side():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    meta = {"a_group": torch.arange(4), "p_group": torch.arange(4),
            "a_cluster": torch.full((4,), -1), "p_cluster": torch.full((4,), -1)}
    for model in (MoCo("resnet18", dim=8, queue=16), TripletNet("resnet18", embed_dim=16)):
        loss = model(x, x + 0.1 * torch.randn_like(x), meta)
        loss.backward()
        assert torch.isfinite(loss)
        assert model.trunk.net.conv1.weight.grad is not None


def test_split_batch_norm_normalises_each_group_on_its_own():
    from vidmine.training.backbones import SplitBatchNorm2d
    torch.manual_seed(0)
    x = torch.randn(12, 5, 3, 3) * torch.arange(1, 13).view(12, 1, 1, 1)   # groups differ
    split = SplitBatchNorm2d(5, splits=3)
    out = split(x)
    plain = torch.nn.BatchNorm2d(5)
    for g in range(3):   # group g: samples 4g .. 4g + 3
        expected = F.batch_norm(x[4 * g:4 * g + 4], None, None, training=True, eps=plain.eps)
        assert torch.allclose(out[4 * g:4 * g + 4], expected, atol=1e-5)
    assert not torch.allclose(out, plain(x), atol=1e-3)   # not the whole batch's statistics
    stats = [plain.momentum * x[4 * g:4 * g + 4].transpose(0, 1).reshape(5, -1).mean(1)
             for g in range(3)]
    assert torch.allclose(split.running_mean, torch.stack(stats).mean(0), atol=1e-5)
    split.eval()
    plain.load_state_dict(split.state_dict())   # checkpoints load into plain networks
    plain.eval()
    assert torch.allclose(split(x), plain(x))


def test_split_batch_norm_keeps_a_channels_last_batch_channels_last():
    """A copy into the default layout made every convolution after it 1.5x slower."""
    from vidmine.training.backbones import SplitBatchNorm2d
    torch.manual_seed(0)
    x = torch.randn(8, 16, 6, 6)
    split = SplitBatchNorm2d(16, splits=2)
    out = split(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, SplitBatchNorm2d(16, splits=2)(x), atol=1e-5)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (7, 2, 3), (5, 2, 2),
                                                     (3, 3, 1), (3, 1, 0)])
def test_tap_cropped_convolution_equals_the_whole_one(kernel, stride, padding):
    from vidmine.training.backbones import TapCroppedConv2d, _taps_in_use
    torch.manual_seed(0)
    cropped_somewhere = False
    for height, width in [(1, 1), (2, 2), (1, 3), (3, 2), (4, 4), (7, 5), (9, 9)]:
        if min(height, width) + 2 * padding < kernel:
            continue
        whole = torch.nn.Conv2d(4, 6, kernel, stride, padding)
        cropped = TapCroppedConv2d(4, 6, kernel, stride, padding)
        cropped.load_state_dict(whole.state_dict())
        x = torch.randn(3, 4, height, width, requires_grad=True)
        y = x.detach().clone().requires_grad_()
        out_whole, out_cropped = whole(x), cropped(y)
        assert out_cropped.shape == out_whole.shape
        assert torch.allclose(out_cropped, out_whole, atol=1e-5)
        grad = torch.randn_like(out_whole)
        out_whole.backward(grad)
        out_cropped.backward(grad)
        for a, b in [(x.grad, y.grad), (whole.weight.grad, cropped.weight.grad),
                     (whole.bias.grad, cropped.bias.grad)]:
            assert torch.allclose(a, b, atol=1e-5)
        cropped_somewhere |= _taps_in_use(height, kernel, stride, padding) is not None
    assert cropped_somewhere or padding == 0   # the test reaches the cropped path


def test_trunk_at_32_px_equals_the_plain_torchvision_network():
    """Its last stage runs on 1x1 maps, where the cropped 3x3 convolutions are 1x1 ones."""
    import torchvision

    from vidmine.training.backbones import TapCroppedConv2d, Trunk
    torch.manual_seed(0)
    trunk = Trunk("resnet18")
    assert isinstance(trunk.net.layer4[1].conv2, TapCroppedConv2d)
    plain = torchvision.models.resnet18(weights=None)
    plain.fc = torch.nn.Identity()
    plain.load_state_dict(trunk.net.state_dict())
    x, weights = torch.randn(8, 3, 32, 32), torch.randn(8, 512)
    out, ref = trunk(x), plain(x)
    assert torch.allclose(out, ref, atol=1e-4)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    for (name, a), b in zip(trunk.net.named_parameters(), plain.parameters()):
        # float rounding only (~1e-6); batch norm makes some gradients near zero elementwise
        assert (a.grad - b.grad).norm() <= 1e-4 * b.grad.norm(), name


def test_moco_keys_never_share_batch_norm_groups_with_their_queries():
    """In one process both encoders normalise in groups and keys are shuffled first: the
    samples a key is normalised with are not the samples its query is normalised with."""
    torch.manual_seed(0)
    splits, n = 4, 16
    model = MoCo("resnet18", dim=8, queue=32, bn_splits=splits)
    seen = []
    model.encoder_k.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    x = torch.randn(n, 3, 32, 32)
    keys = model._keys(x)
    order = [next(j for j in range(n) if torch.equal(seen[0][p], x[j])) for p in range(n)]
    size = n // splits
    key_group = {order[p]: p // size for p in range(n)}
    for i in range(n):
        query_mates = {j for j in range(n) if j // size == i // size}
        key_mates = {j for j in range(n) if key_group[j] == key_group[i]}
        assert key_mates != query_mates and not key_mates < query_mates and len(key_mates) == 4
    # keys come back in the order of their queries (training-mode batch norm depends on the
    # batch only, so the shuffled batch gives the same outputs again)
    with torch.no_grad():
        shuffled = F.normalize(model.encoder_k(seen[0]), dim=1)
    for p in range(n):
        assert torch.allclose(keys[order[p]], shuffled[p], atol=1e-5)
    bn = [m for m in model.encoder_q.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(getattr(m, "splits", 1) == splits for m in bn)


def test_moco_schedule_fits_short_runs_and_keeps_the_paper_values_for_long_ones():
    from vidmine.training.models import moco_schedule
    m, k = moco_schedule(steps=1000, batch=64, crops=5000)
    assert m == pytest.approx(0.99) and k == 512            # 5000 crops / 8 -> 512
    assert m ** 1000 < 1e-4                                  # the random start is gone
    assert moco_schedule(steps=200_000, batch=256, crops=1_281_167) == (0.999, 65536)
    assert moco_schedule(steps=50, batch=8, crops=100) == (0.9, 256)
    assert moco_schedule(steps=1000, batch=64, crops=5000, momentum=0.999, queue=4096) == (0.999, 4096)
