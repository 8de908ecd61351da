"""The MoCo v2 augmentations: per image (CPU workers) and batched (the GPU path, whose
arithmetic runs on any device; only nvjpeg decoding needs CUDA)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from vidmine.images import encode_image
from vidmine.training.augment import BatchAugment, CpuAugment, cpu_transform, normalize, upload_images
from vidmine.training.data import bytes_tensor

OFF = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "p_jitter": 0.0, "p_gray": 0.0, "p_blur": 0.0,
       "p_flip": 0.0}


def _images(sizes=((48, 48), (48, 48), (40, 64), (64, 40)), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]


def test_cpu_recipe_gives_fixed_size_uint8_and_follows_the_seed():
    t = cpu_transform(32)
    img = _images()[2]
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        outs.append(t(img))
    assert outs[0].shape == (3, 32, 32) and outs[0].dtype == torch.uint8
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_batched_crop_with_everything_off_is_the_image_itself():
    """Also beside larger images: the zero padding of the batch canvas never bleeds in."""
    imgs = _images(((48, 48), (48, 48), (96, 130), (60, 48)))
    out = BatchAugment(48, **OFF)(imgs, torch.Generator().manual_seed(0))
    assert torch.allclose(out[:2] * 255, torch.stack(imgs[:2]).float(), atol=1e-3)
    # 60x48 with ratio 1: the centred 48x48 square, rows 6..54.
    assert torch.allclose(out[3] * 255, imgs[3][:, 6:54].float(), atol=1e-3)


def test_batched_downscale_averages_whole_bins():
    """Half size = the mean of each 2x2 block (no aliasing from point sampling)."""
    imgs = _images(((64, 64),) * 2)
    out = BatchAugment(32, **OFF)(imgs, torch.Generator().manual_seed(0))
    expected = F.avg_pool2d(torch.stack(imgs).float() / 255, 2)
    assert torch.allclose(out, expected, atol=1e-5)


def test_batched_flip_and_grayscale():
    imgs = _images(((32, 32),) * 2)
    g = torch.Generator().manual_seed(0)
    flipped = BatchAugment(32, **{**OFF, "p_flip": 1.0})(imgs, g)
    assert torch.allclose(flipped * 255, torch.stack(imgs).float().flip(-1), atol=1e-3)
    gray = BatchAugment(32, **{**OFF, "p_gray": 1.0})(imgs, g)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])


def test_batched_recipe_mixed_sizes_range_and_determinism():
    imgs = _images()
    aug = BatchAugment(32)
    a = aug(imgs, torch.Generator().manual_seed(3))
    b = aug(imgs, torch.Generator().manual_seed(3))
    c = aug(imgs, torch.Generator().manual_seed(4))
    assert a.shape == (4, 3, 32, 32)
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Jitter on (p=1) with a zero-strength hue rotation keeps a gray image gray.
    gray = [torch.full((3, 40, 40), 120, dtype=torch.uint8)]
    out = BatchAugment(32, **{**OFF, "p_jitter": 1.0})(gray, torch.Generator().manual_seed(0))
    assert (out.amax(1) - out.amin(1)).max() < 1e-4


def test_decode_then_augment_on_cpu():
    rgb = np.random.default_rng(0).integers(0, 256, (48, 56, 3), dtype=np.uint8)
    blobs = [bytes_tensor(encode_image(rgb))] * 2
    decoded = decode_jpeg(blobs, mode=ImageReadMode.RGB)
    assert decoded[0].shape == (3, 48, 56)
    x = BatchAugment(32).decode_and_augment(blobs, "cpu", torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all()
    assert torch.allclose(normalize(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))[0, :, 0, 0],
                          -torch.tensor([0.485, 0.456, 0.406]) / torch.tensor([0.229, 0.224, 0.225]))


def test_upload_keeps_each_image_and_its_augmentation():
    """The GPU recipe's one-copy upload of worker-decoded crops of many sizes: every image
    comes back whole, and the recipe draws the same crops from it."""
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
              for h, w in ((40, 56), (64, 48), (33, 71))]
    moved = upload_images(images, "cpu")
    assert [m.shape for m in moved] == [i.shape for i in images]
    assert all(torch.equal(m, i) for m, i in zip(moved, images))
    recipe = BatchAugment(32)
    assert torch.equal(recipe(moved, torch.Generator().manual_seed(3)),
                       recipe(images, torch.Generator().manual_seed(3)))


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA device for nvjpeg decoding; this machine has none")
def test_nvjpeg_decode_and_gpu_augment():
    rgb = np.random.default_rng(0).integers(0, 256, (48, 56, 3), dtype=np.uint8)
    blobs = [bytes_tensor(encode_image(rgb))] * 4
    luma_gpu = decode_jpeg(blobs, mode=ImageReadMode.GRAY, device="cuda")
    luma_cpu = decode_jpeg(blobs, mode=ImageReadMode.GRAY)
    assert luma_gpu[0].is_cuda and luma_gpu[0].shape == (1, 48, 56)
    assert (luma_gpu[0].cpu().int() - luma_cpu[0].int()).abs().max() <= 3  # IDCTs differ by LSBs
    # nvjpeg upsamples the 4:2:0 chroma otherwise than libjpeg-turbo's fancy upsampling (seen
    # on an H200: up to 71 levels apart on this noise image), which moves pixels but keeps
    # each channel's mean.
    rgb_gpu = decode_jpeg(blobs, mode=ImageReadMode.RGB, device="cuda")[0].cpu().double()
    rgb_cpu = decode_jpeg(blobs, mode=ImageReadMode.RGB)[0].double()
    assert rgb_gpu.shape == (3, 48, 56)
    assert (rgb_gpu.mean((1, 2)) - rgb_cpu.mean((1, 2))).abs().max() <= 1.5
    x = BatchAugment(32).decode_and_augment(blobs, "cuda", torch.Generator("cuda").manual_seed(0),
                                            channels_last=True)
    assert x.is_cuda and x.shape == (4, 3, 32, 32) and torch.isfinite(x).all()
    assert x.is_contiguous(memory_format=torch.channels_last)
    on_gpu = upload_images(list(decode_jpeg(blobs, mode=ImageReadMode.RGB)), "cuda")
    assert all(img.is_cuda and img.shape == (3, 48, 56) for img in on_gpu)


def test_cpu_loader_recipes_give_uint8_batches():
    imgs = _images()
    for kind in ("v2", "batched"):
        torch.manual_seed(0)
        out = CpuAugment(32, kind)(imgs)
        assert out.shape == (4, 3, 32, 32) and out.dtype == torch.uint8
    with pytest.raises(ValueError, match="v2 or batched"):
        CpuAugment(32, "pil")


def test_colour_augment_off_keeps_every_colour_and_on_changes_them():
    """--no-colour-augment (an ablation of the study) drops jitter and grayscale from both CPU
    recipes: a flat red image stays red through crops, flips and blur; with them, most of
    the draws (jitter p 0.8, grayscale p 0.2) come out another colour."""
    red = torch.tensor([200, 40, 40], dtype=torch.uint8).view(3, 1, 1)
    imgs = [red.expand(3, 40, 50).clone() for _ in range(32)]
    for kind in ("v2", "batched"):
        torch.manual_seed(0)
        kept = CpuAugment(32, kind, colour=False)(imgs).float()
        assert (kept - red.view(1, 3, 1, 1)).abs().max() <= 1, kind
        torch.manual_seed(0)
        changed = CpuAugment(32, kind)(imgs).float()
        moved = (changed - red.view(1, 3, 1, 1)).abs().amax(dim=(1, 2, 3)) > 10
        assert moved.sum() >= 16, (kind, moved.sum())


@pytest.mark.parametrize("side, size", [(40, 64), (56, 32), (50, 48)])
def test_resized_crops_at_the_edge_of_a_small_image_are_not_darkened(side, size):
    """A crop touching the right and bottom edge of an image smaller than the largest of the
    batch is resized without the canvas padding bleeding into its last row and column."""
    flat = torch.full((3, side, side), 200, dtype=torch.uint8)
    imgs = [flat, torch.randint(0, 256, (3, 100, 120), dtype=torch.uint8)]
    out = BatchAugment(size, **OFF)(imgs, torch.Generator().manual_seed(0))[0] * 255
    assert torch.allclose(out, torch.full_like(out, 200.0), atol=0.5), \
        (out[:, -1].mean().item(), out[:, :, -1].mean().item())


def test_crop_scale_is_the_least_share_of_the_image_a_crop_shows():
    """--crop-scale (an ablation of the study), in both CPU recipes: on an image whose red and
    green encode x and y, the span of each crop's red times that of its green is the share of
    the image it shows: at least 0.9 (less the blur at the borders) with --crop-scale 0.9,
    often under half with MoCo v2's 0.2."""
    ramp = torch.arange(48, dtype=torch.uint8) * 5
    img = torch.stack([ramp.view(1, 48).expand(48, 48), ramp.view(48, 1).expand(48, 48),
                       torch.zeros(48, 48, dtype=torch.uint8)])

    def shares(out):
        span = out[:, :2].float().flatten(2)
        span = span.amax(2) - span.amin(2)
        return span[:, 0] * span[:, 1] / float(ramp[-1]) ** 2

    for kind in ("v2", "batched"):
        torch.manual_seed(0)
        whole = shares(CpuAugment(32, kind, colour=False, min_scale=0.9)([img] * 64))
        assert whole.min() >= 0.8, (kind, whole.min())
        torch.manual_seed(0)
        moco = shares(CpuAugment(32, kind, colour=False)([img] * 64))
        assert (moco < 0.5).sum() >= 16, (kind, moco)
