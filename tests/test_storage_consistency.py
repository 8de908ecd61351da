"""The consistency rule under SIGKILL: no crop row may ever point at missing bytes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from sqlalchemy import func, select

from vidmine.storage.schema import crops, videos
from vidmine.storage.store import StorageConfig, Store
from vidmine.storage.verify import verify

_WRITER = textwrap.dedent("""
    import sys, numpy as np
    from vidmine.storage.store import Store, StorageConfig
    from vidmine.storage.ingest import CropRecord, TrackRecord, VideoResult, commit_video
    from vidmine.images import encode_image
    store = Store(StorageConfig(workdir=sys.argv[1], db=sys.argv[2]))
    writer = store.new_writer("kill")
    rng = np.random.default_rng(int(sys.argv[3]))
    owner = f"killme-{sys.argv[3]}"
    print("ready", flush=True)
    while (video := store.index.claim_video(owner, lease_s=0.5)) is not None:
        tracks = [TrackRecord(crops=[CropRecord(f, (0, 0, 8, 8), encode_image(
                      rng.integers(0, 255, (48, 48, 3), np.uint8)), 48, 48) for f in range(6)])
                  for _ in range(5)]
        commit_video(store.index, writer, video["id"], owner, VideoResult(tracks=tracks))
    store.seal(writer)
    print("finished", flush=True)
""")


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_no_row_without_bytes(tmp_path, db_url):
    workdir = tmp_path / "work"
    store = Store(StorageConfig(workdir=str(workdir), db=db_url))
    n_videos = 60
    store.index.add_videos([{"path": f"/v/{i}.mp4"} for i in range(n_videos)])
    rng = np.random.default_rng(0)
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(workdir), db_url,
                                 str(round_)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        report = verify(store)
        assert report.rows_without_bytes == [], "a row points at bytes that were never committed"
        time.sleep(0.6)  # the killed worker's lease expires

    report = verify(store, repair=True)
    assert report.rows_without_bytes == [] and report.repaired_bytes == len(report.bytes_without_rows)
    after = verify(store)
    assert after.ok and not after.dead_shards, after.as_dict()

    # A final, unkilled worker finishes every video: they all end done, each exactly once.
    out = subprocess.run([sys.executable, "-c", _WRITER, str(workdir), db_url, "99"],
                         capture_output=True, text=True, timeout=300)
    assert "finished" in out.stdout, out.stderr
    with store.index.read() as conn:
        statuses = dict(conn.execute(select(videos.c.status, func.count())
                                     .group_by(videos.c.status)).all())
        per_video = conn.execute(select(crops.c.video_id, func.count())
                                 .group_by(crops.c.video_id)).all()
    assert statuses == {"done": n_videos}
    assert len(per_video) == n_videos and all(n == 30 for _, n in per_video)
    assert verify(store).ok
    store.close()
