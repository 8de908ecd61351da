"""Contact sheets: rows of stored crops tiled into one PNG, for checking by eye.

Every package that shows crops to a person (mined tracks, clusters, pairs, neighbourhoods)
renders through :func:`contact_sheet`, so they all look alike.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import select

from .codec import decode_image
from .schema import crops
from .store import Store


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    scale = size / max(h, w)
    img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))),
                     interpolation=cv2.INTER_AREA)
    canvas = np.full((size, size, 3), 32, np.uint8)
    y, x = (size - img.shape[0]) // 2, (size - img.shape[1]) // 2
    canvas[y:y + img.shape[0], x:x + img.shape[1]] = img
    return canvas


def load_crops(store: Store, crop_ids: Sequence[int]) -> dict[int, np.ndarray]:
    """Decoded RGB images of the given crops, by id."""
    ids = sorted({int(i) for i in crop_ids})
    with store.index.read() as conn:
        refs = conn.execute(select(crops.c.id, crops.c.shard, crops.c.key)
                            .where(crops.c.id.in_(ids))).all()
    blobs = store.reader.get_many([(shard, key) for _, shard, key in refs])
    return {crop_id: decode_image(b) for (crop_id, _, _), b in zip(refs, blobs)}


def contact_sheet(store: Store, rows: Sequence[Sequence[int]], out_png: str | Path,
                  labels: Sequence[str] | None = None, thumb: int = 96, gap: int = 4) -> Path:
    """Tile crops (one list of crop ids per row) into ``out_png`` with a label per row."""
    if not rows:
        raise ValueError("contact sheet: nothing to show")
    images = load_crops(store, [i for row in rows for i in row])
    label_w = 200 if labels else 0
    ncols = max(len(r) for r in rows)
    height = len(rows) * (thumb + gap) + gap
    width = label_w + ncols * (thumb + gap) + gap
    sheet = np.full((height, width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        y = gap + r * (thumb + gap)
        if labels:
            cv2.putText(sheet, str(labels[r])[:28], (4, y + thumb // 2 + 4),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.42, (20, 20, 20), 1, cv2.LINE_AA)
        for c, crop_id in enumerate(row):
            x = label_w + gap + c * (thumb + gap)
            sheet[y:y + thumb, x:x + thumb] = _fit(images[int(crop_id)], thumb)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return out_png
