"""The SQL index on a real SQLite file and a real PostgreSQL server."""
from __future__ import annotations

import multiprocessing as mp
import threading
import time

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from vidmine.storage.db import Index
from vidmine.storage.errors import DatabaseError
from vidmine.storage.migrate import current_revision, head_revision
from vidmine.storage.schema import crops, metadata, pairs, videos


def test_migrations_build_exactly_the_schema(db_url):
    index = Index(db_url)
    assert current_revision(index.engine) == head_revision()
    with index.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == [], f"schema.py and the migrations disagree: {diff}"
    Index(db_url)  # opening again is a no-op, not an error


def test_bulk_insert_100k_crops_and_pairs_and_read_them_into_numpy(db_url):
    index = Index(db_url)
    run_id = index.start_run("graph", {"test": True})
    index.add_videos([{"path": "/v.mp4"}])
    n = 100_000
    t0 = time.perf_counter()
    with index.write() as conn:
        index.insert_columns(conn, crops, {
            "video_id": np.ones(n, np.int64), "kind": ["object"] * n,
            "frame_index": np.arange(n), "shard": ["s"] * n, "key": [f"k{i}" for i in range(n)]})
    with index.read() as conn:
        ids = index.read_columns(conn, select(crops.c.id).order_by(crops.c.id))["id"]
    assert len(ids) == n
    rng = np.random.default_rng(0)
    anchor, positive = rng.choice(ids, n), rng.choice(ids, n)
    with index.write() as conn:
        index.insert_columns(conn, pairs, {"run_id": np.full(n, run_id), "anchor": anchor,
                                           "positive": positive, "kind": ["transitive"] * n,
                                           "split": ["train"] * n})
    with index.read() as conn:
        cols = index.read_columns(conn, select(pairs.c.anchor, pairs.c.positive)
                                  .order_by(pairs.c.id))
    elapsed = time.perf_counter() - t0
    assert cols["anchor"].dtype.kind == "i" and len(cols["anchor"]) == n
    np.testing.assert_array_equal(cols["anchor"], anchor)
    np.testing.assert_array_equal(cols["positive"], positive)
    assert elapsed < 60, f"2 x 100k rows took {elapsed:.1f}s: the bulk path is not bulk"


def test_bad_urls_are_one_line_errors(tmp_path):
    with pytest.raises(DatabaseError, match="not a database URL"):
        Index("no such thing")
    with pytest.raises(DatabaseError, match="does not exist"):
        Index(f"sqlite:///{tmp_path}/missing/dir/index.sqlite")
    with pytest.raises(DatabaseError, match="cannot open the index"):
        Index("postgresql+psycopg://nobody@127.0.0.1:1/none")


def _claimer(url: str, owner: str, out: mp.Queue) -> None:
    index = Index(url, migrate=False)
    got = []
    while (row := index.claim_video(owner, lease_s=600)) is not None:
        got.append(row["id"])
    out.put((owner, got))


@pytest.mark.parametrize("workers", [4])
def test_concurrent_claims_never_double_claim_or_lose(db_url, workers):
    index = Index(db_url)
    n_videos = 120
    index.add_videos([{"path": f"/v/{i}.mp4", "size": i} for i in range(n_videos)])
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(db_url, f"w{i}", out)) for i in range(workers)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    claimed = [v for _, got in results for v in got]
    assert len(claimed) == n_videos and len(set(claimed)) == n_videos
    with index.read() as conn:
        owners = dict(conn.execute(select(videos.c.id, videos.c.lease_owner)).all())
    for owner, got in results:
        assert all(owners[v] == owner for v in got)


def test_two_scans_registering_one_new_file_at_once_both_succeed(db_url):
    """The race of two daemons on one folder: each sees the file unknown, one inserts first.
    A second writer holds its uncommitted row while add_videos checks and inserts; the
    insert waits on it (PostgreSQL) or on the write lock (SQLite), then keeps that row."""
    index, other = Index(db_url), Index(db_url)
    outcome = {}
    with other.write() as conn:
        conn.execute(videos.insert(), [{"path": "/v/race.mp4", "size": 1, "status": "pending",
                                        "attempts": 0, "updated_at": time.time()}])
        racer = threading.Thread(target=lambda: outcome.update(
            new=index.add_videos([{"path": "/v/race.mp4", "size": 2}, {"path": "/v/b.mp4"}])))
        racer.start()
        racer.join(timeout=1.0)
        assert racer.is_alive(), "add_videos should wait for the other writer's transaction"
    racer.join(timeout=30)
    assert outcome == {"new": 1}
    with index.read() as conn:
        rows = dict(conn.execute(select(videos.c.path, videos.c.size)).all())
    assert rows == {"/v/race.mp4": 1, "/v/b.mp4": 0}


def test_expired_lease_is_reclaimed_and_dead_videos_fail(db_url):
    index = Index(db_url)
    index.add_videos([{"path": "/v/a.mp4"}])
    first = index.claim_video("dead-worker", lease_s=-1)       # expires at once
    assert index.renew_lease(first["id"], "dead-worker", 60) is True
    index.release_video(first["id"], "dead-worker")             # clean release: no attempt spent
    again = index.claim_video("w1", lease_s=-1)
    assert again["id"] == first["id"] and again["attempts"] == 1
    third = index.claim_video("w2", lease_s=-1)                  # w1 died: lease expired
    assert third["id"] == first["id"] and third["attempts"] == 2
    assert index.renew_lease(first["id"], "w1", 60) is False     # w1 lost it
    index.claim_video("w3", lease_s=-1)
    assert index.claim_video("w4", lease_s=60, max_attempts=3) is None
    with index.read() as conn:
        status, error = conn.execute(select(videos.c.status, videos.c.error)).one()
    assert status == "failed" and "every attempt" in error
    assert index.video_counts()["failed"] == 1


def test_add_videos_is_idempotent(db_url):
    index = Index(db_url)
    assert index.add_videos([{"path": "/a"}, {"path": "/b"}]) == 2
    assert index.add_videos([{"path": "/b"}, {"path": "/c"}]) == 1
    with index.read() as conn:
        assert conn.execute(select(func.count()).select_from(videos)).scalar_one() == 3


def test_a_run_record_ends_done_or_failed_with_its_error(db_url):
    import json

    from vidmine.storage.schema import runs
    index = Index(db_url)
    with index.run("embed", {"model": "handcrafted"}) as run:
        run.summary = {"embedded": 3}
    with pytest.raises(ZeroDivisionError):
        with index.run("train", {"lr": 0.1}) as failing:
            failing.summary = {"step": 7}
            failing.summary["ratio"] = 1 / 0
    with index.run("train") as stopped:
        stopped.status = "interrupted"
    with index.read() as conn:
        rows = {r.id: r for r in conn.execute(select(runs))}
    done, failed, interrupted = rows[run.id], rows[failing.id], rows[stopped.id]
    assert (done.status, json.loads(done.summary), json.loads(done.config)) == (
        "done", {"embedded": 3}, {"model": "handcrafted"})
    assert failed.status == "failed" and failed.finished_at is not None
    assert json.loads(failed.summary) == {"step": 7, "error": "ZeroDivisionError: division by zero"}
    assert interrupted.status == "interrupted"
