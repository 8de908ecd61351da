"""Contact sheets: rows of stored crops tiled into one PNG, for checking by eye.

Every package that shows crops to a person (mined tracks, clusters, pairs, neighbourhoods)
renders through :func:`contact_sheet`, so they all look alike.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from vidmine.images import fit_square, write_image
from vidmine.storage.store import Store


def contact_sheet(store: Store, rows: Sequence[Sequence[int]], out_png: str | Path,
                  labels: Sequence[str] | None = None, thumb: int = 96, gap: int = 4) -> Path:
    """Tile crops (one list of crop ids per row) into ``out_png`` with a label per row."""
    if not rows:
        raise ValueError("contact sheet: nothing to show")
    images = store.load_crops([i for row in rows for i in row])
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
            if int(crop_id) in images:   # else left blank: the crop could not be read
                sheet[y:y + thumb, x:x + thumb] = fit_square(images[int(crop_id)], thumb)
    return write_image(out_png, sheet)
