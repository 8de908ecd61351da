"""Fixtures shared by the whole suite: the sample data, and the two real databases."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.pgserver import PostgresServer, find_bindir
from vidmine.storage.store import StorageConfig, Store

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VIDMINE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "videos").is_dir():
        pytest.skip(f"sample data not found at {SHARED_DATA} (CI always has ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pg_server():
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries missing in CI: .ci/run should install them")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    server = PostgresServer(bindir)
    try:
        server.start()
    except (subprocess.CalledProcessError, OSError) as exc:
        log = server.tmp / "server.log"
        detail = log.read_text()[-2000:] if log.exists() else getattr(exc, "stderr", b"")
        server.stop()
        pytest.fail(f"could not start PostgreSQL: {exc}\n{detail}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """A fresh, empty database of each kind: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
    return request.getfixturevalue("pg_server").new_database()


@pytest.fixture
def store(tmp_path, db_url) -> Store:
    s = Store(StorageConfig(workdir=str(tmp_path / "work"), db=db_url))
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path) -> Store:
    s = Store(StorageConfig(workdir=str(tmp_path / "work")))
    yield s
    s.close()
