"""The local executor: worker processes that claim, mine and commit videos, and the
supervisor that feeds them, replaces the ones that die and enforces the time limit.

A worker owns one LMDB shard (writers never contend) and loops: claim a video with a lease
and run it through the shared loop (``mining.loop.mine_one``: heartbeat, mine, commit).
Decoding hostile files can crash natively or hang, so the supervisor watches each worker:
a worker killed by a crash signal, or past the per-video limit, fails its video with the
reason and is replaced. SIGTERM/SIGINT make workers give their video back (pending) and
seal their shard.
"""
from __future__ import annotations

import multiprocessing as mp
import queue
import signal
import time
from pathlib import Path

import cv2

from vidmine.storage.errors import StorageError
from vidmine.storage.store import StorageConfig, Store

from .config import MiningConfig
from .decode import quiet_logging
from .discover import StabilityWatch, discover
from .loop import PROGRESS_EVERY, RunSummary, mine_one, owner_name

# Deaths that mean the decoder crashed on this file: fail the video rather than retry it.
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE, signal.SIGILL}
TIMEOUT_GRACE_S = 10.0  # the worker's own deadline fires first; the supervisor kills after


def worker_main(wid: int, storage_cfg: StorageConfig, cfg: MiningConfig, run_id: int | None,
                daemon: bool, events: mp.Queue) -> None:
    """Entry of a worker process (spawned)."""
    quiet_logging()
    cv2.setNumThreads(1)
    stopping: list[str] = []

    def on_signal(signum, _frame):
        stopping.append(f"stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    owner = owner_name()
    writer_box: list = [None]
    store = None
    try:
        store = Store(storage_cfg, migrate=False)
        while not stopping:
            video = store.index.claim_video(owner, cfg.lease_s, cfg.max_attempts)
            if video is None:
                counts = store.index.video_counts()
                if not daemon and counts["pending"] == 0 and counts["claimed"] == 0:
                    break
                time.sleep(min(cfg.poll_s, 1.0))
                continue
            events.put({"kind": "start", "wid": wid, "video_id": video["id"], "owner": owner,
                        "path": video["path"], "t0": time.time()})
            result = mine_one(store, writer_box, video, owner, cfg, run_id,
                              lambda: stopping[0] if stopping else None,
                              lambda n: events.put({"kind": "frames", "wid": wid, "n": n}))
            events.put({"kind": "end", "wid": wid, **result})
    except StorageError as exc:
        events.put({"kind": "fatal", "wid": wid, "reason": str(exc)})
        raise SystemExit(3) from exc
    finally:
        if store is not None:
            if writer_box[0] is not None:
                store.seal(writer_box[0])
            store.close()


class Supervisor:
    """Runs ``cfg.workers`` worker processes over the videos of ``video_dir``.

    ``daemon=False``: mine what is there (waiting for half-copied files to settle) and return.
    ``daemon=True``: keep watching the folder until ``stop()`` or SIGTERM/SIGINT.
    """

    def __init__(self, store: Store, cfg: MiningConfig, video_dir: str | Path, *,
                 daemon: bool = False, run_id: int | None = None, progress=None):
        self.store, self.cfg, self.video_dir = store, cfg, Path(video_dir)
        self.daemon, self.run_id, self.progress = daemon, run_id, progress
        self.ctx = mp.get_context("spawn")
        self.events = self.ctx.Queue()
        self.workers: dict[int, mp.Process] = {}
        self.current: dict[int, dict] = {}
        self.summary = RunSummary()
        self.watch = StabilityWatch(cfg.stable_s)
        self._stopping = False
        self._next_wid = 0

    def stop(self, *_args) -> None:
        self._stopping = True

    def _scan(self) -> int:
        """Register stable files; return how many found files are not stable yet."""
        found = discover(self.store.index, self.video_dir, self.watch)
        self.summary.skipped.update(found.skipped)
        return found.unstable

    def _start_worker(self) -> None:
        wid = self._next_wid
        self._next_wid += 1
        proc = self.ctx.Process(target=worker_main, name=f"vidmine-worker-{wid}", args=(
            wid, self.store.cfg, self.cfg, self.run_id, self.daemon, self.events))
        proc.start()
        self.workers[wid] = proc

    def _handle(self, ev: dict) -> None:
        kind, wid = ev["kind"], ev["wid"]
        if kind == "start":
            self.current[wid] = ev
        elif kind == "frames":
            self.summary.frames += ev["n"]
            if self.progress:
                self.progress.frames(ev["n"])
        elif kind == "end":
            self.current.pop(wid, None)
            self.summary.add(ev)
            rest = ev["frames"] % PROGRESS_EVERY  # frames since the last "frames" event
            self.summary.frames += rest
            if self.progress:
                self.progress.frames(rest)
                if ev["status"] != "released":
                    self.progress.video(ev["status"])
        elif kind == "fatal":
            self.summary.fatal = ev["reason"]
            self._stopping = True

    def _fail_current(self, wid: int, reason: str) -> None:
        held = self.current.pop(wid, None)
        if held is None:
            return
        if self.store.index.release_video(held["video_id"], held["owner"], "failed", error=reason):
            self.summary.failed[held["path"]] = reason
            if self.progress:
                self.progress.video("failed")

    def _reap(self) -> None:
        now = time.time()
        for wid, held in list(self.current.items()):
            if now - held["t0"] > self.cfg.video_timeout_s + TIMEOUT_GRACE_S:
                proc = self.workers.get(wid)
                if proc is not None and proc.is_alive():
                    proc.kill()
                    proc.join(5)
                self._drain()
                self._fail_current(wid, f"timed out after {self.cfg.video_timeout_s:.0f} s "
                                        "(worker killed)")
        for wid, proc in list(self.workers.items()):
            if proc.is_alive():
                continue
            proc.join()
            self._drain()
            del self.workers[wid]
            code = proc.exitcode
            if code is not None and code < 0 and -code in {int(s) for s in CRASH_SIGNALS}:
                name = signal.Signals(-code).name
                self._fail_current(wid, f"worker crashed ({name}) while mining this video")
            # Any other death (SIGKILL from outside, OOM): the lease expires and the video is
            # mined again from scratch by whoever claims it next (max_attempts bounds that).
            self.current.pop(wid, None)
            if code != 0:
                self.summary.workers_replaced += 1

    def _drain(self, timeout: float = 0.0) -> None:
        while True:
            try:
                self._handle(self.events.get(timeout=timeout))
            except queue.Empty:
                return
            timeout = 0.0

    def run(self) -> RunSummary:
        t0 = time.time()
        unstable = self._scan()
        last_scan = time.time()
        try:
            while True:
                self._drain(timeout=0.5)
                self._reap()
                if self._stopping:
                    break
                if time.time() - last_scan >= (self.cfg.poll_s if self.daemon else 1.0) \
                        and (self.daemon or unstable):
                    unstable = self._scan()
                    last_scan = time.time()
                counts = self.store.index.video_counts()
                if self.progress:
                    self.progress.total(sum(counts[k] for k in ("pending", "claimed"))
                                        + self.progress.finished)
                work = counts["pending"] + counts["claimed"]
                if self.daemon or work:
                    while len(self.workers) < min(self.cfg.workers, max(work, 1)):
                        self._start_worker()
                elif not self.workers and not unstable:
                    break
        finally:
            self._shutdown()
            self.summary.seconds = time.time() - t0
        return self.summary

    def _shutdown(self) -> None:
        for proc in self.workers.values():
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the worker releases its video and seals its shard
        deadline = time.time() + 30
        for proc in self.workers.values():
            proc.join(max(0.1, deadline - time.time()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._drain()
        self.workers.clear()
