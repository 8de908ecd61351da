"""The MoCo v2 augmentation recipe, twice: per image on CPU, and batched on the GPU.

Recipe (facebookresearch/moco, ``main_moco.py --aug-plus``): random resized crop (scale
0.2-1), colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale p 0.2, Gaussian blur
(sigma 0.1-2 px at 224 px, scaled here to the image size) p 0.5, horizontal flip.

The CPU path runs torchvision.transforms.v2 in DataLoader workers on uint8 tensors and
leaves normalisation to the device. The batched path takes JPEG bytes, decodes the whole
batch with nvjpeg (``decode_jpeg(list, device="cuda")``) and draws every random parameter
as a tensor: crops through one ``roi_align`` over the zero-padded batch, jitter as per-image
factors and a hue rotation matrix, blur as one grouped convolution. Differences from the
CPU path: jitter applies brightness, contrast, saturation, hue in that fixed order (v2
shuffles the order per image), and hue is rotated in YIQ space rather than in HSV.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.ops import roi_align
from torchvision.transforms import v2

from vidmine.images import IMAGENET_MEAN, IMAGENET_STD

SCALE = (0.2, 1.0)
RATIO = (3 / 4, 4 / 3)
JITTER = (0.4, 0.4, 0.4, 0.1)     # brightness, contrast, saturation, hue
P_JITTER, P_GRAY, P_BLUR, P_FLIP = 0.8, 0.2, 0.5, 0.5
GRAY = (0.299, 0.587, 0.114)


def blur_sigma(size: int) -> tuple[float, float]:
    return 0.1 * size / 224, 2.0 * size / 224


def blur_kernel_size(size: int) -> int:
    return 2 * math.ceil(3 * blur_sigma(size)[1]) + 1


def cpu_transform(size: int, colour: bool = True, min_scale: float = SCALE[0]) -> v2.Compose:
    """Per-image MoCo v2 recipe: uint8 CHW tensor in, uint8 ``size``x``size`` tensor out;
    ``colour=False`` leaves out the jitter and the grayscale, ``min_scale`` is the smallest
    share of the image's area a crop keeps (ablations)."""
    b, c, s, h = JITTER
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(min_scale, 1.0), ratio=RATIO, antialias=True),
        v2.RandomApply([v2.ColorJitter(b, c, s, h)], p=P_JITTER if colour else 0.0),
        v2.RandomGrayscale(p=P_GRAY if colour else 0.0),
        v2.RandomApply([v2.GaussianBlur(blur_kernel_size(size), sigma=blur_sigma(size))],
                       p=P_BLUR),
        v2.RandomHorizontalFlip(p=P_FLIP),
    ])


class CpuAugment:
    """The worker-side recipe for a whole batch: uint8 CHW images -> uint8 [N, 3, size, size].

    ``v2`` runs the torchvision recipe image by image (the reference); ``batched`` runs
    :class:`BatchAugment` on the CPU tensors (same arithmetic as the GPU path, about 3x
    faster per crop here because hue and blur are vectorised across the batch)."""

    def __init__(self, size: int, kind: str = "v2", colour: bool = True,
                 min_scale: float = SCALE[0]):
        if kind not in ("v2", "batched"):
            raise ValueError(f"CPU augmentation is v2 or batched, not {kind!r}")
        self.kind = kind
        self.per_image = cpu_transform(size, colour, min_scale)
        self.batched = BatchAugment.recipe(size, colour, min_scale)

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        if self.kind == "v2":
            return torch.stack([self.per_image(x) for x in images])
        return (self.batched(images, None) * 255).round().to(torch.uint8)


def keep_decoded(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """The loader's transform when workers decode for the GPU recipe: pixels as they are."""
    return images


def upload_images(images: list[torch.Tensor], device: torch.device | str) -> list[torch.Tensor]:
    """uint8 CHW images of any sizes -> the same images on ``device``, in one host-to-device
    copy (hundreds of small copies a batch cost more than the bytes)."""
    flat = torch.cat([img.reshape(-1) for img in images]).to(device, non_blocking=True)
    parts = flat.split([img.numel() for img in images])
    return [part.view(img.shape) for part, img in zip(parts, images)]


def normalize(images: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 or [0, 1] float NCHW -> float normalised by the ImageNet mean and std."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x * x.new_tensor(GRAY).view(1, 3, 1, 1)).sum(1, keepdim=True)


class BatchAugment:
    """MoCo v2 on a whole batch on one device. Probabilities are arguments so that tests can
    switch single steps on or off."""

    def __init__(self, size: int, scale=SCALE, ratio=RATIO, p_jitter=P_JITTER, p_gray=P_GRAY,
                 p_blur=P_BLUR, p_flip=P_FLIP):
        self.size, self.scale, self.ratio = size, scale, ratio
        self.p_jitter, self.p_gray, self.p_blur, self.p_flip = p_jitter, p_gray, p_blur, p_flip

    @classmethod
    def recipe(cls, size: int, colour: bool = True, min_scale: float = SCALE[0]) -> BatchAugment:
        """MoCo v2's recipe; ``colour=False`` without jitter and grayscale, ``min_scale`` the
        smallest crop (ablations)."""
        scale = (min_scale, 1.0)
        return cls(size, scale) if colour else cls(size, scale, p_jitter=0.0, p_gray=0.0)

    def decode_and_augment(self, blobs: list[torch.Tensor], device: torch.device | str,
                           generator: torch.Generator, channels_last: bool = False) -> torch.Tensor:
        images = decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device)
        return normalize(self(images, generator), channels_last)

    def __call__(self, images: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """uint8 CHW images of any sizes -> float [N, 3, size, size] in [0, 1]."""
        device = images[0].device
        n = len(images)

        def rand(*shape):
            return torch.rand(*shape, device=device, generator=generator)

        x = self._resized_crops(images, rand)
        flip = rand(n) < self.p_flip
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
        x = self._jitter(x, rand)
        gray = rand(n) < self.p_gray
        if gray.any():
            x = torch.where(gray.view(n, 1, 1, 1), _gray(x).expand_as(x), x)
        return self._blur(x, rand)

    def _resized_crops(self, images, rand) -> torch.Tensor:
        n, device = len(images), images[0].device
        hw = torch.tensor([img.shape[-2:] for img in images], device=device, dtype=torch.float32)
        h, w = hw[:, 0:1], hw[:, 1:2]
        # torchvision's RandomResizedCrop: 10 tries of (area, log-ratio), first that fits wins.
        tries = 10
        area = h * w * (self.scale[0] + (self.scale[1] - self.scale[0]) * rand(n, tries))
        log_r = math.log(self.ratio[0]) + (math.log(self.ratio[1]) - math.log(self.ratio[0])) \
            * rand(n, tries)
        cw = torch.sqrt(area * torch.exp(log_r)).round()
        ch = torch.sqrt(area / torch.exp(log_r)).round()
        fits = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
        first = torch.where(fits.any(1), fits.float().argmax(1), 0)
        pick = torch.arange(n, device=device)
        cw, ch = cw[pick, first], ch[pick, first]
        h, w = h[:, 0], w[:, 0]
        # No try fits: the whole image cut to the nearest allowed aspect ratio (centred).
        fallback = ~fits.any(1)
        fw = torch.where(w / h > self.ratio[1], (h * self.ratio[1]).round(), w)
        fh = torch.where(w / h < self.ratio[0], (w / self.ratio[0]).round(), h)
        cw, ch = torch.where(fallback, fw, cw), torch.where(fallback, fh, ch)
        x0 = torch.where(fallback, (w - cw) / 2, (rand(n) * (w - cw + 1)).floor())
        y0 = torch.where(fallback, (h - ch) / 2, (rand(n) * (h - ch + 1)).floor())
        boxes = torch.stack([x0, y0, x0 + cw, y0 + ch], 1)
        # One roi_align over a shared canvas instead of one call per input size (mined crops
        # come in many sizes). A resized crop that touches an image's right or bottom edge
        # samples half a pixel past it, so each image is padded with its own edge pixels:
        # zeros there darkened the last row and column.
        canvas = torch.empty(n, 3, int(h.max()), int(w.max()), dtype=torch.uint8, device=device)
        for i, img in enumerate(images):
            ih, iw = img.shape[1:]
            canvas[i, :, :ih, :iw] = img
            canvas[i, :, :ih, iw:] = img[:, :, -1:]
            canvas[i, :, ih:] = canvas[i, :, ih - 1:ih]
        rois = torch.cat([torch.arange(n, device=device, dtype=torch.float32)[:, None], boxes], 1)
        # sampling_ratio=0: adaptive, so each output pixel averages its whole input bin
        # (area-like downscaling, no aliasing when the crop is much larger than the output)
        return roi_align(canvas.float() / 255, rois, self.size, spatial_scale=1.0,
                         sampling_ratio=0, aligned=True)

    def _jitter(self, x, rand) -> torch.Tensor:
        n = x.shape[0]
        on = (rand(n) < self.p_jitter).float()
        b, c, s, h = JITTER
        # Every draw is made, in this order, whether or not an image is jittered, so that
        # the draws after it do not depend on the outcome.
        bf, cf, sf = ((1 + on * strength * (2 * rand(n) - 1)).view(n, 1, 1, 1)
                      for strength in (b, c, s))   # uniform in [1 - strength, 1 + strength]
        angle = on * h * (2 * rand(n) - 1) * 2 * math.pi
        if not on.any():   # e.g. --no-colour-augment: the arithmetic would change nothing
            return x
        x = (x * bf).clamp(0, 1)
        x = (cf * x + (1 - cf) * _gray(x).mean((2, 3), keepdim=True)).clamp(0, 1)
        x = (sf * x + (1 - sf) * _gray(x)).clamp(0, 1)
        return torch.einsum("nij,njhw->nihw", _hue_matrix(angle), x).clamp(0, 1)

    def _blur(self, x, rand) -> torch.Tensor:
        n = x.shape[0]
        lo, hi = blur_sigma(self.size)
        k = blur_kernel_size(self.size)
        sigma = lo + (hi - lo) * rand(n)
        on = rand(n) < self.p_blur
        t = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
        kern = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
        kern = kern / kern.sum(1, keepdim=True)
        delta = (t == 0).to(x.dtype).expand(n, k)
        kern = torch.where(on[:, None], kern, delta).repeat_interleave(3, 0)  # [3n, k]
        y = F.pad(x.reshape(1, 3 * n, *x.shape[2:]), (k // 2, k // 2, k // 2, k // 2),
                  mode="reflect")
        y = F.conv2d(y, kern.view(3 * n, 1, 1, k), groups=3 * n)
        y = F.conv2d(y, kern.view(3 * n, 1, k, 1), groups=3 * n)
        return y.view_as(x)


def _hue_matrix(angle: torch.Tensor) -> torch.Tensor:
    """Per-image RGB->RGB matrices rotating the chroma plane of YIQ by ``angle`` radians."""
    rgb2yiq = angle.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322],
                                [0.211, -0.523, 0.312]])
    yiq2rgb = torch.linalg.inv(rgb2yiq)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(len(angle), 3, 3, device=angle.device, dtype=angle.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    return yiq2rgb @ rot @ rgb2yiq
