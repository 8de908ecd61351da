"""Image bytes in the crop store: JPEG (default) or PNG, RGB uint8 arrays in and out."""
from __future__ import annotations

import cv2
import numpy as np


def encode_image(rgb: np.ndarray, quality: int = 90, fmt: str = "jpeg") -> bytes:
    """Encode an HxWx3 RGB (or HxW gray) uint8 array."""
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
