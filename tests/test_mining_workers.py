"""Workers, leases and the daemon, with real processes and real databases: a worker killed
mid-video and the run resumed, a crashing worker replaced, two daemons sharing one folder
and one database, and a file copied slowly into a watched folder."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from vidmine.mining.synthetic import generate_video
from vidmine.storage.schema import crops, runs, videos
from vidmine.storage.store import StorageConfig, Store
from vidmine.storage.verify import verify

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--working-long-side", "320", "--frame-interval-s", "0"]


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vidmine.mining.cli", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def _wait(pred, timeout: float, what: str, step: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def _rows(store: Store) -> dict[str, dict]:
    with store.index.read() as conn:
        return {Path(r["path"]).name: dict(r) for r in conn.execute(select(videos)).mappings()}


def _mine_runs(store: Store) -> int:
    with store.index.read() as conn:
        return len(conn.execute(select(runs.c.id).where(runs.c.kind == "mine")).all())


def _claimed_owner(store: Store, name: str):
    row = _rows(store).get(name)
    return row["lease_owner"] if row and row["status"] == "claimed" else None


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Three short synthetic clips, generated once for the module."""
    folder = tmp_path_factory.mktemp("clips")
    for i in range(3):
        generate_video(folder / f"clip{i}.mp4", seed=10 + i, seconds=2.0)
    return folder


def test_worker_killed_mid_video_then_run_resumed(tmp_path, shared_data):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "box.mp4").symlink_to(shared_data / "videos" / "box.mp4")
    work = tmp_path / "work"
    args = ["run", str(folder), "--workdir", str(work), "--workers", "1", "--stable-s", "0",
            "--lease-s", "2", "--heartbeat-s", "0.5", "--json", *SMALL]
    # With CSRT, mining box.mp4 takes ~10 s, so the kill lands mid-video (with the default
    # KCF it is done within the second waited below); the resumed run uses the default.
    proc = _cli(*args, "--tracker", "csrt")
    store = Store(StorageConfig(workdir=str(work)))
    try:
        owner = _wait(lambda: _claimed_owner(store, "box.mp4"), 60, "the video to be claimed")
        time.sleep(1.0)  # mid-video
        os.killpg(proc.pid, signal.SIGKILL)   # the run and its worker die, as on a power cut
        proc.wait(10)
        _wait(lambda: not _alive(int(owner.split(":")[1])), 10, "the worker to be gone")
        row = _rows(store)["box.mp4"]
        assert row["status"] == "claimed"
        with store.index.read() as conn:   # nothing half-visible
            assert conn.execute(select(crops.c.id).where(crops.c.video_id == row["id"])).first() is None
        resumed = subprocess.run([sys.executable, "-m", "vidmine.mining.cli", *args], cwd=ROOT,
                                 capture_output=True, text=True, timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["done"] == 1
        row = _rows(store)["box.mp4"]
        assert row["status"] == "done" and row["attempts"] == 2
        report = verify(store, repair=True)   # the killed worker's shard is dead: sealed now
        assert not report.rows_without_bytes
        assert verify(store).ok and not verify(store).dead_shards
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        store.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_crashed_worker_is_replaced_and_its_video_failed_with_the_reason(tmp_path, shared_data, clips):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a_box.mp4").symlink_to(shared_data / "videos" / "box.mp4")
    (folder / "b_clip.mp4").symlink_to(clips / "clip0.mp4")
    work = tmp_path / "work"
    proc = _cli("run", str(folder), "--workdir", str(work), "--workers", "1", "--stable-s", "0",
                "--json", *SMALL)
    store = Store(StorageConfig(workdir=str(work)))
    try:
        owner = _wait(lambda: _claimed_owner(store, "a_box.mp4"), 60, "box.mp4 to be claimed")
        time.sleep(0.5)
        os.kill(int(owner.split(":")[1]), signal.SIGSEGV)  # what a native decoder crash looks like
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        summary = json.loads(out)
        assert summary["workers_replaced"] == 1 and summary["done"] == 1
        rows = _rows(store)
        assert rows["a_box.mp4"]["status"] == "failed"
        assert "SIGSEGV" in rows["a_box.mp4"]["error"]
        assert rows["b_clip.mp4"]["status"] == "done"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        store.close()


def test_two_daemons_share_a_folder_and_a_database(tmp_path, clips, db_url):
    folder = tmp_path / "videos"
    folder.mkdir()
    for clip in sorted(clips.glob("*.mp4")):
        (folder / clip.name).symlink_to(clip)
    work = tmp_path / "work"
    common = ["daemon", str(folder), "--workdir", str(work), "--db", db_url, "--workers", "1",
              "--stable-s", "0", "--poll-s", "0.3", "--json", *SMALL]
    daemons = [_cli(*common) for _ in range(2)]
    store = Store(StorageConfig(workdir=str(work), db=db_url))
    try:
        _wait(lambda: all(r["status"] == "done" for r in _rows(store).values())
              and len(_rows(store)) == 3, 120, "all clips mined", step=0.3)
        # One daemon can mine all three clips while the other is still importing; a signal
        # before Python runs our code would kill it with the default action. Its run row is
        # written after its handler is in place.
        _wait(lambda: _mine_runs(store) == 2, 60, "both daemons to start", step=0.3)
        for d in daemons:
            os.killpg(d.pid, signal.SIGTERM)
        ended = [d.communicate(timeout=60) for d in daemons]
        for d, (_, err) in zip(daemons, ended):
            assert d.returncode == 0, err
        outs = [json.loads(out) for out, _ in ended]
        assert sum(o["done"] for o in outs) == 3           # each clip mined by exactly one
        rows = _rows(store)
        assert all(r["attempts"] == 1 for r in rows.values())
        with store.index.read() as conn:
            shards_per_video = {vid: {s for v, s in conn.execute(
                select(crops.c.video_id, crops.c.shard)) if v == vid} for vid in
                (r["id"] for r in rows.values())}
        assert all(len(s) <= 1 for s in shards_per_video.values())
        report = verify(store)
        assert report.ok and not report.bytes_without_rows   # no second mining left bytes
    finally:
        for d in daemons:
            if d.poll() is None:
                os.killpg(d.pid, signal.SIGKILL)
        store.close()


def test_file_copied_slowly_into_a_watched_folder_is_mined_once_complete(tmp_path, clips):
    folder = tmp_path / "videos"
    folder.mkdir()
    work = tmp_path / "work"
    daemon = _cli("daemon", str(folder), "--workdir", str(work), "--workers", "1",
                  "--stable-s", "1.5", "--poll-s", "0.2", "--json", *SMALL)
    store = Store(StorageConfig(workdir=str(work)))
    try:
        data = (clips / "clip1.mp4").read_bytes()
        target = folder / "arriving.mp4"
        chunk = len(data) // 8 + 1
        with open(target, "wb") as fh:
            for start in range(0, len(data), chunk):
                fh.write(data[start:start + chunk])
                fh.flush()
                time.sleep(0.5)
                assert "arriving.mp4" not in _rows(store), "registered while still growing"
        row = _wait(lambda: _rows(store).get("arriving.mp4", {}).get("status") == "done"
                    and _rows(store)["arriving.mp4"], 60, "the copied file to be mined", step=0.2)
        assert row["size"] == len(data) and row["attempts"] == 1 and row["frames_decoded"] == 50
        os.killpg(daemon.pid, signal.SIGTERM)
        out, err = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, err
        assert json.loads(out)["done"] == 1
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGKILL)
        store.close()


def test_daemon_signalled_before_its_supervisor_exists_starts_no_worker(tmp_path, clips):
    """The window the two-daemon test once hit: SIGTERM while the store is being opened."""
    from vidmine.mining.cli import _stop_on_signal
    from vidmine.mining.config import MiningConfig
    from vidmine.mining.worker import Supervisor

    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "clip0.mp4").symlink_to(clips / "clip0.mp4")
    store = Store(StorageConfig(workdir=str(tmp_path / "work")), create=True)
    before = signal.getsignal(signal.SIGTERM)
    try:
        with _stop_on_signal() as register:
            os.kill(os.getpid(), signal.SIGTERM)   # handled: this test process lives on
            sup = Supervisor(store, MiningConfig(stable_s=0), folder)
            register(sup)
            summary = sup.run()
        assert signal.getsignal(signal.SIGTERM) is before   # the caller's handler is back
        with pytest.raises(KeyboardInterrupt), _stop_on_signal():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)   # a second signal stops waiting
        assert signal.getsignal(signal.SIGTERM) is before
        assert sup._next_wid == 0 and summary.done == 0   # no worker was started
        assert _rows(store)["clip0.mp4"]["status"] == "pending"   # left for the next daemon
    finally:
        store.close()
