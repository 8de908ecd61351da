"""Images as vidmine handles them everywhere: RGB uint8 arrays, one codec for stored bytes,
one resize to a long side, and the normalisation every network input shares."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# The ImageNet statistics torchvision's networks are initialised for; every network input
# of vidmine (training, embedding, evaluation) is normalised with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def encode_image(rgb: np.ndarray, quality: int = 90, fmt: str = "jpeg") -> bytes:
    """Encode an HxWx3 RGB (or HxW gray) uint8 array as JPEG (default) or PNG."""
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        ok, buf = cv2.imencode(".png", img)
    else:
        raise ValueError(f"unknown image format {fmt!r} (jpeg or png)")
    if not ok:
        raise ValueError(f"could not encode a {rgb.shape} image as {fmt}")
    return buf.tobytes()


def decode_image(data: bytes) -> np.ndarray:
    """Decode stored bytes into an HxWx3 RGB uint8 array."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("stored crop bytes are not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decodable(data: bytes | None) -> bool:
    """Do these bytes decode as an image? Decoded at 1/8 scale: the check, not the pixels."""
    if not data:
        return False
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8) is not None


def load_rgb(item: np.ndarray | str | Path) -> np.ndarray:
    """An RGB array as it is, or the image file at a path, read as RGB."""
    if isinstance(item, np.ndarray):
        return item
    img = cv2.imread(str(item), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"not a readable image: {item}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def long_side_size(width: int, height: int, long_side: int, upscale: bool = False) -> tuple[int, int]:
    """(width, height) scaled so the long side is ``long_side`` (never up unless ``upscale``)."""
    scale = long_side / max(width, height)
    if scale >= 1.0 and not upscale:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_long_side(img: np.ndarray, long_side: int, interpolation: int = cv2.INTER_AREA,
                     upscale: bool = False) -> tuple[np.ndarray, float]:
    """``img`` with its long side at ``long_side`` px, and the scale applied (new / old width).
    INTER_AREA by default: it averages, so downscaling does not alias."""
    h, w = img.shape[:2]
    size = long_side_size(w, h, long_side, upscale)
    if size == (w, h):
        return img, 1.0
    return cv2.resize(img, size, interpolation=interpolation), size[0] / w


def fit_square(img: np.ndarray, size: int, fill: int = 32) -> np.ndarray:
    """``img`` scaled to fit a ``size`` x ``size`` canvas, centred on a flat background."""
    img, _ = resize_long_side(img, size, upscale=True)
    canvas = np.full((size, size, 3), fill, np.uint8)
    y, x = (size - img.shape[0]) // 2, (size - img.shape[1]) // 2
    canvas[y:y + img.shape[0], x:x + img.shape[1]] = img
    return canvas


def write_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB array to ``path`` (format by extension), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path
