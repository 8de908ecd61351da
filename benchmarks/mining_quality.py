"""Mining quality under any settings: what a speed change must not lose.

    python benchmarks/mining_quality.py [--synthetic N] [--jobs J] [--json] [--FLAG V ...]

Two checks, the ones issue 14 holds a faster miner to (docs/mining.md, "Speed"):
* synthetic videos with ground truth (``generate_video`` seeds 0..N-1, made once in
  ``--clips-dir``): intra-track crop-pair precision and object recall, summed over videos
  as tests/test_mining_quality.py does (aim: precision >= 0.95, recall >= 0.8);
* the real sample videos in ../shared/data/videos (when present): tracks and crops per
  video, to compare with the default settings (aim: within 10 %).
Mining settings take the same flags as ``vidmine-mine run`` (e.g. --tracker lk); the default
settings' figures are printed beside the chosen ones unless ``--no-baseline``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from vidmine.config import add_config_args, build_config
from vidmine.mining.config import MiningConfig

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "data" / "videos"


def _synthetic(folder: Path, seed: int) -> Path:
    """The video of this seed with its ``<name>.truth.json`` beside it, as ``vidmine-mine
    synth`` writes them (made once)."""
    from vidmine.mining.synthetic import generate_video
    path = folder / f"quality_seed{seed}.mp4"
    truth = path.with_suffix(".truth.json")
    if not (path.is_file() and truth.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.mp4")
        truth.write_text(json.dumps(generate_video(partial, seed=seed).to_json()))
        partial.rename(path)
    return path


def _job(args: tuple[str, str, MiningConfig]) -> dict:
    kind, path, cfg = args
    import cv2

    from vidmine.mining.decode import quiet_logging
    from vidmine.mining.pipeline import mine_video
    from vidmine.mining.synthetic import GroundTruth, track_quality
    quiet_logging()
    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    result = mine_video(path, cfg)
    row = {"video": Path(path).name, "seconds": time.perf_counter() - t0,
           "tracks": len(result.tracks), "crops": sum(len(t.crops) for t in result.tracks)}
    if kind == "synthetic":
        truth = GroundTruth.from_json(json.loads(Path(path).with_suffix(".truth.json").read_text()))
        q = track_quality(result, truth)
        objects = truth.boxes.shape[1]
        row.update(pairs=q["pairs"], correct=round(q["precision"] * q["pairs"]),
                   found=round(q["recall"] * objects), objects=objects)
    return row


def evaluate(cfg: MiningConfig, synthetic: list[Path], samples: list[Path], jobs: int) -> dict:
    work = [("synthetic", str(p), cfg) for p in synthetic] + [("sample", str(p), cfg) for p in samples]
    with mp.get_context("spawn").Pool(jobs) as pool:
        rows = pool.map(_job, work, chunksize=1)
    syn = [r for r in rows if "pairs" in r]
    pairs = sum(r["pairs"] for r in syn)
    return {"precision": sum(r["correct"] for r in syn) / max(pairs, 1),
            "recall": sum(r["found"] for r in syn) / max(sum(r["objects"] for r in syn), 1),
            "pairs": pairs, "synthetic_seconds": sum(r["seconds"] for r in syn),
            "samples": {r["video"]: (r["tracks"], r["crops"]) for r in rows if "pairs" not in r}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--synthetic", type=int, default=12, help="synthetic videos (seeds 0..N-1)")
    parser.add_argument("--jobs", type=int, default=2, help="videos mined at once")
    parser.add_argument("--clips-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "vidmine-quality-clips")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the default settings' run")
    parser.add_argument("--json", action="store_true")
    add_config_args(parser, MiningConfig, skip=("workers",))
    args = parser.parse_args()
    cfg = build_config(MiningConfig, args)
    synthetic = [_synthetic(args.clips_dir, s) for s in range(args.synthetic)]
    samples = sorted(p for p in SAMPLES.glob("*") if p.is_file()) if SAMPLES.is_dir() else []
    if not samples:
        print(f"no sample videos at {SAMPLES}: synthetic videos only", file=sys.stderr)
    runs = {"chosen": evaluate(cfg, synthetic, samples, args.jobs)}
    if not args.no_baseline and cfg != MiningConfig():
        runs["default"] = evaluate(MiningConfig(), synthetic, samples, args.jobs)
    changed = {k: v for k, v in asdict(cfg).items() if v != getattr(MiningConfig(), k)}
    if args.json:
        print(json.dumps({"changed": changed, **runs}))
        return 0
    print(f"settings changed from the defaults: {changed or 'none'}")
    names = sorted({v for r in runs.values() for v in r["samples"]})
    print("| settings | pairs | precision | recall | synthetic mining s | "
          + " | ".join(f"{n} tracks/crops" for n in names) + " |")
    print("| --- " * (5 + len(names)) + "|")
    for label, r in runs.items():
        cells = [f"{r['samples'][n][0]}/{r['samples'][n][1]}" if n in r["samples"] else "-"
                 for n in names]
        print(f"| {label} | {r['pairs']} | {r['precision']:.3f} | {r['recall']:.2f} | "
              f"{r['synthetic_seconds']:.1f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
