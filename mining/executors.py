"""Executors: who runs ``mine_video``. The local process pool (worker.Supervisor) is the
default; Ray (optional extra ``vidmine[ray]``) runs the same function as Ray tasks with
retries, for many machines.

With Ray the driver keeps the roles that need one owner: it claims videos (leases and
heartbeats as usual), owns the LMDB shard, and commits each result under the consistency
rule as it arrives. Tasks are pure: path in, VideoResult out, so a retried task is harmless.
"""
from __future__ import annotations

import time
from pathlib import Path

from vidmine.storage.ingest import LeaseLost, commit_video
from vidmine.storage.store import Store

from .config import MiningConfig
from .decode import VideoRejected, quiet_logging
from .discover import StabilityWatch, content_hash, duplicate_of, register, scan
from .pipeline import MiningStats, mine_video
from .worker import RunSummary, Supervisor, owner_name


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
        result = mine_video(path, cfg, jpeg_quality, stats=stats)
    except VideoRejected as exc:
        return "failed", str(exc), 0
    return "done", result, stats.frames_decoded


def run_ray(store: Store, cfg: MiningConfig, video_dir: str | Path, *,
            run_id: int | None = None, progress=None, address: str | None = None) -> RunSummary:
    """Mine every stable video under ``video_dir`` with Ray tasks (``cfg.workers`` in flight)."""
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise RuntimeError("the ray executor needs Ray: pip install 'vidmine[ray]'") from exc
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else cfg.workers,
                 include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    task = ray.remote(num_cpus=1, max_retries=cfg.max_attempts - 1)(_ray_task)
    summary = RunSummary()
    t0 = time.time()
    watch = StabilityWatch(cfg.stable_s)
    owner = owner_name()
    writer = None
    inflight: dict = {}   # ObjectRef -> (video row, started)
    last_beat = time.time()
    try:
        while True:
            found = scan(video_dir)
            ready = watch.ready(found)
            register(store.index, ready)
            while len(inflight) < cfg.workers:
                video = store.index.claim_video(owner, cfg.lease_s, cfg.max_attempts)
                if video is None:
                    break
                other = duplicate_of(store.index, video["id"], content_hash(video["path"]))
                if other is not None:
                    reason = f"same content as {other}"
                    store.index.release_video(video["id"], owner, "skipped", error=reason)
                    summary.skipped[video["path"]] = reason
                    continue
                ref = task.remote(video["path"], cfg, store.cfg.jpeg_quality)
                inflight[ref] = (video, time.time())
            if not inflight:
                if len(ready) == len(found):
                    break
                time.sleep(1.0)
                continue
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            if time.time() - last_beat > cfg.heartbeat_s:
                for video, _ in inflight.values():
                    store.index.renew_lease(video["id"], owner, cfg.lease_s)
                last_beat = time.time()
            for ref, (video, started) in list(inflight.items()):
                if ref not in done and time.time() - started > cfg.video_timeout_s:
                    ray.cancel(ref, force=True)
                    reason = f"timed out after {cfg.video_timeout_s:.0f} s (task cancelled)"
                    store.index.release_video(video["id"], owner, "failed", error=reason)
                    summary.failed[video["path"]] = reason
                    del inflight[ref]
            for ref in done:
                video, _ = inflight.pop(ref)
                try:
                    status, payload, frames = ray.get(ref)
                except Exception as exc:  # the task died max_retries + 1 times
                    status, payload, frames = "failed", f"ray task failed: {type(exc).__name__}", 0
                if status == "failed":
                    store.index.release_video(video["id"], owner, "failed", error=payload)
                    summary.failed[video["path"]] = payload
                else:
                    payload.meta["run_id"] = run_id
                    if writer is None:
                        writer = store.new_writer("ray")
                    try:
                        tracks, _ = commit_video(store.index, writer, video["id"], owner, payload)
                    except LeaseLost:
                        summary.released += 1
                        continue
                    summary.done += 1
                    summary.tracks += tracks
                    summary.crops += sum(len(t.crops) for t in payload.tracks)
                    summary.frames += frames
                    if progress:
                        progress.frames(frames)
                if progress:
                    progress.video(status)
    finally:
        for video, _ in inflight.values():
            store.index.release_video(video["id"], owner, "pending")
        if writer is not None:
            store.seal(writer)
        summary.seconds = time.time() - t0
    return summary
