"""Mining throughput against decode-only throughput of the same video, in the same run.

    python benchmarks/mining.py [--video PATH] [--workers N] [--repeat R] [--json] [--FLAG V ...]

Source frames per second of (a) decoding every frame and converting nothing, and (b) the whole
mining pipeline (decode, sample, flow, proposals, tracking, crops; no database), with one
worker and with N worker processes each on its own copy of the job. Prints the ratios
mining/decode (aim >= 0.5 on one core) and the N-worker scaling. Mining settings can be
overridden with the same flags as ``vidmine-mine run`` (e.g. --tracker mosse).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

from vidmine.config import add_config_args, build_config
from vidmine.mining.config import MiningConfig

ROOT = Path(__file__).resolve().parents[1]

SAMPLE = ROOT.parent / "shared" / "data" / "videos" / "box.mp4"


def _job(args: tuple[str, str, MiningConfig, int]) -> tuple[int, float]:
    kind, path, cfg, repeat = args
    import cv2

    from vidmine.mining.decode import decode_only, quiet_logging
    from vidmine.mining.pipeline import MiningStats, mine_video
    quiet_logging()
    cv2.setNumThreads(1)
    frames, t0 = 0, time.perf_counter()
    for _ in range(repeat):
        if kind == "decode":
            frames += decode_only(path, cfg)
        else:
            stats = MiningStats()
            mine_video(path, cfg, stats=stats)
            frames += stats.frames_decoded
    return frames, time.perf_counter() - t0


def throughput(kind: str, path: str, cfg: MiningConfig, workers: int, repeat: int) -> float:
    """Source frames per second over ``workers`` processes running at once."""
    jobs = [(kind, path, cfg, repeat)] * workers
    if workers == 1:
        frames, seconds = _job(jobs[0])
        return frames / seconds
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(_job, [(kind, path, cfg, 1)] * workers)   # warm the imports up
        t0 = time.perf_counter()
        results = pool.map(_job, jobs)
        wall = time.perf_counter() - t0
    return sum(f for f, _ in results) / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", default=None, help="video file (default: box.mp4 sample, "
                                                      "else a synthetic clip)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    add_config_args(parser, MiningConfig, skip=("workers",))
    args = parser.parse_args()
    cfg = build_config(MiningConfig, args)
    video = args.video
    if video is None:
        if SAMPLE.is_file():
            video = str(SAMPLE)
        else:
            from vidmine.mining.synthetic import generate_video
            video = str(Path(tempfile.mkdtemp()) / "bench.mp4")
            generate_video(video, seed=0, width=640, height=480, seconds=8.0)
    _job(("mine", video, cfg, 1))   # warm caches and imports in this process
    out = {"video": video, "workers": args.workers, "tracker": cfg.tracker,
           "sample_fps": cfg.sample_fps}
    for n in (1, args.workers):
        dec = throughput("decode", video, cfg, n, args.repeat)
        mine = throughput("mine", video, cfg, n, args.repeat)
        out[f"decode_fps_{n}w"] = round(dec, 1)
        out[f"mine_fps_{n}w"] = round(mine, 1)
        out[f"mine_over_decode_{n}w"] = round(mine / dec, 3)
    out["mining_scaling"] = round(out[f"mine_fps_{args.workers}w"] / out["mine_fps_1w"], 2)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"video {video}  tracker {cfg.tracker}  sample_fps {cfg.sample_fps}")
        for n in (1, args.workers):
            print(f"{n} worker(s): decode-only {out[f'decode_fps_{n}w']:8.1f} frames/s   "
                  f"mining {out[f'mine_fps_{n}w']:8.1f} frames/s   "
                  f"ratio {out[f'mine_over_decode_{n}w']:.3f}")
        print(f"mining scaling 1 -> {args.workers} workers: {out['mining_scaling']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
