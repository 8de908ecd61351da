"""Mining throughput against decode-only throughput of the same video, in the same run, on
three resolutions.

    python benchmarks/mining.py [--video PATH ...] [--workers N] [--repeat R] [--json]
                                [--clips-dir DIR] [--FLAG V ...]

Clips: the box.mp4 sample (640x480 H.264, when ../shared/data is there) and two synthetic
H.264 clips this script makes once and keeps in ``--clips-dir`` (default: a folder in the
temp dir): 1280x720 and 1920x1080, 8 s, three textured objects moving over a panning
background (``vidmine.mining.synthetic.generate_video``), so mining proposes and tracks.
``--video`` (repeatable) replaces them.

For each clip, in fresh spawned processes with OpenCV on one thread: source frames per second
of (a) decoding every frame and converting nothing and (b) the whole mining pipeline (decode,
sample, flow, proposals, tracking, crops; no database) with one worker, then (c) mining with
N workers at once, each on its own copy of the job; the best of R rounds each. Prints one
row per clip: decode fps, mining fps, their ratio (aim >= 0.5), the N-worker scaling of the
wall-clock throughput (aim >= 1.8 with 2 workers: run it on an otherwise idle machine; the
load average before the run is printed), and the peak RSS of the one-worker mining process.
Mining settings can be overridden with the same flags as ``vidmine-mine run`` (e.g.
--tracker mosse).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import av

from vidmine.config import add_config_args, build_config
from vidmine.mining.config import MiningConfig

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "videos" / "box.mp4"
SYNTHETIC = ((1280, 720), (1920, 1080))
SYNTHETIC_SECONDS = 8.0
SYNTHETIC_SEED = 7


def synthetic_clip(folder: Path, width: int, height: int) -> Path:
    """The synthetic clip of this size, made on first use (a few seconds to a minute). Its name
    carries a digest of the generator's source and of PyAV's version: a clip cached by an
    older generator or encoder is made again, not measured in its place."""
    from vidmine.mining import synthetic
    tag = hashlib.sha1(Path(synthetic.__file__).read_bytes() + av.__version__.encode()).hexdigest()[:8]
    path = folder / f"synthetic_{width}x{height}_seed{SYNTHETIC_SEED}_{SYNTHETIC_SECONDS:g}s_{tag}.mp4"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.mp4")   # a killed run leaves no half clip behind
        synthetic.generate_video(partial, seed=SYNTHETIC_SEED, n_objects=3, width=width,
                                 height=height, seconds=SYNTHETIC_SECONDS)
        partial.rename(path)
    return path


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM where there is /proc: ru_maxrss of a spawned
    child also counts the parent's memory at the fork before its exec (Linux keeps it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _job(args: tuple[str, str, MiningConfig]) -> dict:
    """One decode-only or mining pass in a worker process: frames, wall seconds, peak RSS."""
    kind, path, cfg = args
    import cv2

    from vidmine.mining.decode import decode_only, quiet_logging
    from vidmine.mining.pipeline import MiningStats, mine_video
    quiet_logging()
    cv2.setNumThreads(1)   # one core per worker; OpenCV would otherwise spread over all
    wall = time.perf_counter()
    if kind == "decode":
        frames = decode_only(path, cfg)
    else:
        stats = MiningStats()
        mine_video(path, cfg, stats=stats)
        frames = stats.frames_decoded
    return {"frames": frames, "wall": time.perf_counter() - wall, "peak_rss_mb": peak_rss_mb()}


def _rounds(pool, kind: str, path: str, cfg: MiningConfig, workers: int, repeat: int) -> dict:
    """The best of ``repeat`` rounds of ``workers`` jobs at once: frames/s over the round's
    wall clock, and the jobs' peak RSS."""
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        jobs = pool.map(_job, [(kind, path, cfg)] * workers, chunksize=1)
        wall = time.perf_counter() - t0
        frames = sum(j["frames"] for j in jobs)
        round_ = {"fps": frames / wall, "peak_rss_mb": max(j["peak_rss_mb"] for j in jobs)}
        if best is None or round_["fps"] > best["fps"]:
            best = round_
    return best


def measure(path: str, cfg: MiningConfig, workers: int, repeat: int) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        pool.map(_job, [("mine", path, cfg)])          # imports and caches warmed up
        decode = _rounds(pool, "decode", path, cfg, 1, repeat)
        mine = _rounds(pool, "mine", path, cfg, 1, repeat)
    with ctx.Pool(workers) as pool:
        pool.map(_job, [("mine", path, cfg)] * workers, chunksize=1)
        many = _rounds(pool, "mine", path, cfg, workers, repeat)
    with av.open(path) as container:
        stream = container.streams.video[0]
        size = f"{stream.codec_context.width}x{stream.codec_context.height}"
    return {"clip": Path(path).name, "size": size,
            "decode_fps": round(decode["fps"], 1), "mine_fps": round(mine["fps"], 1),
            "mine_over_decode": round(mine["fps"] / decode["fps"], 3),
            f"mine_fps_{workers}w": round(many["fps"], 1),
            "scaling": round(many["fps"] / mine["fps"], 2),
            "peak_rss_mb": round(mine["peak_rss_mb"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", action="append", default=None,
                        help="video file (repeatable; default: box.mp4 and two synthetic clips)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best one counts")
    parser.add_argument("--clips-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "vidmine-bench-clips",
                        help="where the synthetic clips are made once and kept")
    parser.add_argument("--json", action="store_true")
    add_config_args(parser, MiningConfig, skip=("workers",))
    args = parser.parse_args()
    cfg = build_config(MiningConfig, args)
    videos = args.video
    if not videos:
        videos = [str(SAMPLE)] if SAMPLE.is_file() else []
        videos += [str(synthetic_clip(args.clips_dir, w, h)) for w, h in SYNTHETIC]
    load = os.getloadavg()[0]
    rows = [measure(v, cfg, args.workers, args.repeat) for v in videos]
    out = {"workers": args.workers, "repeat": args.repeat, "tracker": cfg.tracker,
           "sample_fps": cfg.sample_fps, "cpus": os.cpu_count(),
           "load_average_before": round(load, 2), "clips": rows}
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"tracker {cfg.tracker}  sample_fps {cfg.sample_fps}  best of {args.repeat}  "
          f"{os.cpu_count()} CPUs, load average {load:.2f} before the run")
    n = args.workers
    print(f"| clip | size | decode fps | mining fps (1 worker) | ratio | {n}-worker scaling "
          f"| peak RSS, 1 worker |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['clip']} | {r['size']} | {r['decode_fps']:.0f} | {r['mine_fps']:.0f} | "
              f"{r['mine_over_decode']:.2f} | {r['scaling']:.2f}x | "
              f"{r['peak_rss_mb']} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
