"""Random-access reads of 128x128 JPEG crops: LMDB crop store vs a folder of JPEG files.

Both hold the same encoded bytes. Measures raw-byte reads and read+decode, in one run, on
a warm page cache (the OS caches both stores alike), and prints the ratios.

    python benchmarks/crop_store.py [--n 20000] [--reads 20000] [--json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from vidmine.images import decode_image, encode_image
from vidmine.storage.cropstore import CropReader, ShardWriter

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"


def make_crops(n: int, rng: np.random.Generator) -> list[bytes]:
    photos = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
              for p in sorted(IMAGES.glob("*.jpg"))] if IMAGES.is_dir() else []
    out = []
    for i in range(n):
        if photos:
            img = photos[i % len(photos)]
            h, w = img.shape[:2]
            s = int(rng.integers(64, min(h, w)))
            y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            crop = cv2.resize(img[y:y + s, x:x + s], (128, 128), interpolation=cv2.INTER_AREA)
        else:
            crop = cv2.GaussianBlur(rng.integers(0, 255, (128, 128, 3), np.uint8), (7, 7), 2)
        out.append(encode_image(crop, quality=90))
    return out


def timed(fn, reads: int) -> float:
    t0 = time.perf_counter()
    fn()
    return reads / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="crops in each store")
    ap.add_argument("--reads", type=int, default=20_000, help="random reads per measurement")
    ap.add_argument("--batch", type=int, default=256, help="crops per get_many call")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    blobs = make_crops(args.n, rng)
    root = Path(tempfile.mkdtemp(prefix="vidmine-bench-"))
    try:
        folder = root / "jpeg"
        for i, b in enumerate(blobs):
            sub = folder / f"{i // 1000:03d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"{i}.jpg").write_bytes(b)
        writer = ShardWriter(root / "shards", "bench")
        for s in range(0, args.n, 1000):
            writer.put_many([(f"c{i}", blobs[i]) for i in range(s, min(s + 1000, args.n))])
        writer.seal()
        reader = CropReader(root / "shards")
        order = rng.integers(0, args.n, args.reads)
        files = [folder / f"{i // 1000:03d}" / f"{i}.jpg" for i in order]
        keys = [("bench", f"c{i}") for i in order]

        def lmdb_raw():
            for s in range(0, len(keys), args.batch):
                reader.get_many(keys[s:s + args.batch])

        def files_raw():
            for p in files:
                p.read_bytes()

        def lmdb_decoded():
            for s in range(0, len(keys), args.batch):
                for b in reader.get_many(keys[s:s + args.batch]):
                    decode_image(b)

        def files_decoded():
            for p in files:
                decode_image(p.read_bytes())

        lmdb_raw(), files_raw()  # warm both page caches alike
        res = {"crops": args.n, "reads": args.reads,
               "mean_jpeg_bytes": int(np.mean([len(b) for b in blobs])),
               "lmdb_raw_per_s": timed(lmdb_raw, args.reads),
               "files_raw_per_s": timed(files_raw, args.reads),
               "lmdb_decoded_per_s": timed(lmdb_decoded, args.reads),
               "files_decoded_per_s": timed(files_decoded, args.reads)}
        res["raw_ratio"] = res["lmdb_raw_per_s"] / res["files_raw_per_s"]
        res["decoded_ratio"] = res["lmdb_decoded_per_s"] / res["files_decoded_per_s"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(res))
        return
    print(f"{args.n} crops of 128x128 JPEG (~{res['mean_jpeg_bytes']} B), {args.reads} random reads")
    for what in ("raw", "decoded"):
        print(f"{what:<8}: LMDB {res[f'lmdb_{what}_per_s']:>10,.0f}/s  "
              f"files {res[f'files_{what}_per_s']:>10,.0f}/s  ratio {res[f'{what}_ratio']:.2f}x")


if __name__ == "__main__":
    main()
