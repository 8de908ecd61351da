"""Executors: who runs the mining loop. The local process pool (worker.Supervisor) is the
default; Ray (optional extra ``vidmine[ray]``) runs ``mine_video`` as Ray tasks with
retries, for many machines.

With Ray the driver keeps the roles that need one owner: it claims videos (with a
heartbeat per video in flight), owns the LMDB shard, and settles each result through the
same ``mining.loop`` as the local workers. Tasks are pure: path in, result out, so a retried
task is harmless. This module only schedules.
"""
from __future__ import annotations

import time
from pathlib import Path

from vidmine.errors import UsageError
from vidmine.storage.db import file_path
from vidmine.storage.store import Store

from .config import MiningConfig
from .decode import VideoRejected, quiet_logging
from .discover import StabilityWatch, discover
from .loop import Heartbeat, RunSummary, owner_name, settle, skip_duplicate
from .pipeline import MiningStats, mine_video
from .worker import Supervisor


def run_local(store: Store, cfg: MiningConfig, video_dir: str | Path, *, daemon: bool = False,
              run_id: int | None = None, progress=None, supervisor_hook=None) -> RunSummary:
    sup = Supervisor(store, cfg, video_dir, daemon=daemon, run_id=run_id, progress=progress)
    if supervisor_hook is not None:
        supervisor_hook(sup)
    return sup.run()


def _ray_task(path: str, cfg: MiningConfig, jpeg_quality: int):
    """One video, in a Ray worker. A rejected file is an answer, not an error to retry."""
    import cv2
    quiet_logging()
    cv2.setNumThreads(1)
    stats = MiningStats()
    try:
        return mine_video(path, cfg, jpeg_quality, stats=stats), stats.frames_decoded
    except VideoRejected as exc:
        return exc, stats.frames_decoded


def run_ray(store: Store, cfg: MiningConfig, video_dir: str | Path, *,
            run_id: int | None = None, progress=None, address: str | None = None) -> RunSummary:
    """Mine every stable video under ``video_dir`` with Ray tasks (``cfg.workers`` in flight)."""
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise UsageError("the ray executor needs Ray: pip install 'vidmine[ray]'") from exc
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else cfg.workers,
                 include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    task = ray.remote(num_cpus=1, max_retries=cfg.max_attempts - 1)(_ray_task)
    summary = RunSummary()
    t0 = time.time()
    watch = StabilityWatch(cfg.stable_s)
    owner = owner_name()
    writer_box: list = [None]
    inflight: dict = {}   # ObjectRef -> (video row, heartbeat, started)

    def finish(ref, outcome, frames: int = 0) -> None:
        video, beat, started = inflight.pop(ref)
        beat.stop()
        event = settle(store, writer_box, video, owner, run_id, outcome, frames, started)
        summary.add(event)
        summary.frames += event["frames"]
        if progress:
            progress.frames(event["frames"])
            if event["status"] != "released":
                progress.video(event["status"])

    try:
        while True:
            found = discover(store.index, video_dir, watch)
            summary.skipped.update(found.skipped)
            while len(inflight) < cfg.workers:
                video = store.index.claim_video(owner, cfg.lease_s, cfg.max_attempts)
                if video is None:
                    break
                try:
                    skipped = skip_duplicate(store, video, owner)
                except VideoRejected as exc:
                    skipped = settle(store, writer_box, video, owner, run_id, exc)
                if skipped is not None:
                    summary.add(skipped)
                    continue
                beat = Heartbeat(store, video["id"], owner, cfg)
                beat.start()
                inflight[task.remote(file_path(video), cfg, store.cfg.jpeg_quality)] = \
                    (video, beat, time.time())
            if not inflight:
                if found.unstable == 0:
                    break
                time.sleep(1.0)
                continue
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in [r for r, (_, _, started) in inflight.items()
                        if r not in done and time.time() - started > cfg.video_timeout_s]:
                ray.cancel(ref, force=True)
                finish(ref, VideoRejected(f"timed out after {cfg.video_timeout_s:.0f} s "
                                          "(task cancelled)"))
            for ref in done:
                try:
                    outcome, frames = ray.get(ref)
                except Exception as exc:  # the task died max_retries + 1 times
                    outcome, frames = VideoRejected(f"ray task failed: {type(exc).__name__}"), 0
                finish(ref, outcome, frames)
    finally:
        for video, beat, _ in inflight.values():
            beat.stop()
            store.index.release_video(video["id"], owner, "pending")
        if writer_box[0] is not None:
            store.seal(writer_box[0])
        summary.seconds = time.time() - t0
    return summary
