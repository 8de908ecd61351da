"""The crop store: encoded images in LMDB, one shard (environment) per writing worker.

Writers never contend because each owns its shard; a shard is *sealed* when its worker
finishes and is read-only from then on. Readers open shards lazily, once per process and
read-only: an LMDB environment must never cross a fork, so the reader forgets inherited
handles when it finds itself in a new process, and pickles without them (spawn).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import resource
import shutil
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import lmdb

from .errors import MissingCropError, ShardError, StoreFullError

SEALED_MARK = "SEALED.json"
WRITER_LOCK = "writer.lock"
_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
# LMDB allows one handle per environment and process, so every reader and writer of this
# process shares one registry of open environments; a forked child starts with an empty one.
_ENVS: dict[str, lmdb.Environment] = {}
_WRITER_PATHS: set[str] = set()
_ENVS_PID = os.getpid()


def _registry() -> dict[str, lmdb.Environment]:
    global _ENVS, _WRITER_PATHS, _ENVS_PID
    if os.getpid() != _ENVS_PID:
        # Inherited through fork: never touch the parent's handles, not even to close them.
        _ENVS, _WRITER_PATHS, _ENVS_PID = {}, set(), os.getpid()
    return _ENVS


def new_shard_name(prefix: str = "w") -> str:
    host = socket.gethostname().split(".")[0]
    return f"{prefix}-{host}-{os.getpid()}-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"


def is_sealed(shard_dir: Path) -> bool:
    return (shard_dir / SEALED_MARK).is_file()


def _disk_full(exc: lmdb.Error, path: Path, needed: int = 0) -> bool:
    """Did a write fail for lack of space? LMDB reports a short write as a bare EIO, so
    besides the error text look at the free space and the process's file-size limit."""
    text = str(exc).lower()
    if "no space" in text or "file too large" in text or "quota" in text \
            or any(isinstance(c, int) and c in _DISK_FULL for c in exc.args):
        return True
    try:
        if shutil.disk_usage(path).free < needed + (1 << 20):
            return True
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        data = path / "data.mdb"
        return limit != resource.RLIM_INFINITY and data.exists() \
            and data.stat().st_size + needed + 65536 > limit
    except OSError:
        return False


class ShardWriter:
    """The one writer of one shard. ``put_many`` commits a batch in one transaction and
    grows the map when it fills; a full disk raises :class:`StoreFullError` with the
    shard's earlier commits intact."""

    def __init__(self, shards_dir: str | Path, name: str | None = None,
                 initial_map_size: int = 64 << 20, max_map_size: int = 1 << 40):
        self.name = name or new_shard_name()
        self.path = Path(shards_dir) / self.name
        if is_sealed(self.path):
            raise ShardError(f"shard {self.name} is sealed and read-only")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / WRITER_LOCK, "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ShardError(f"shard {self.name} already has a writer") from None
        self.max_map_size = max_map_size
        try:
            self.env = lmdb.open(str(self.path), map_size=initial_map_size, subdir=True,
                                 max_dbs=0, readahead=False, meminit=False, lock=True)
        except lmdb.Error as exc:
            self._release()
            if _disk_full(exc, self.path):
                raise StoreFullError(f"disk full: cannot create shard at {self.path}") from exc
            raise ShardError(f"cannot open shard {self.path}: {exc}") from exc
        self.n_items = self.env.stat()["entries"]
        self.n_bytes = 0
        _registry()[str(self.path)] = self.env
        _WRITER_PATHS.add(str(self.path))

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Write ``(key, value)`` pairs in one durable transaction (all or nothing)."""
        if not items:
            return
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    added = 0
                    for key, value in items:
                        added += txn.put(key.encode(), value, overwrite=True, dupdata=False)
                self.n_items += added
                self.n_bytes += sum(len(v) for _, v in items)
                return
            except lmdb.MapFullError:
                self._grow()
            except lmdb.Error as exc:
                if _disk_full(exc, self.path, sum(len(v) for _, v in items)):
                    free = shutil.disk_usage(self.path).free >> 20
                    raise StoreFullError(
                        f"disk full writing shard {self.name} ({free} MiB free at {self.path}); "
                        "earlier crops are intact, free space and resume") from exc
                raise ShardError(f"cannot write shard {self.path}: {exc}") from exc

    def _grow(self) -> None:
        size = self.env.info()["map_size"]
        if size >= self.max_map_size:
            raise StoreFullError(f"shard {self.name} reached its size limit "
                                 f"({self.max_map_size >> 20} MiB); raise max_map_size")
        self.env.set_mapsize(min(size * 2, self.max_map_size))

    def seal(self) -> dict:
        """Flush, close and mark the shard read-only. Returns its item and byte counts."""
        self.env.sync(True)
        entries = self.env.stat()["entries"]
        self._unregister()
        self.env.close()
        info = {"name": self.name, "n_items": entries, "n_bytes": self.n_bytes,
                "sealed_at": time.time()}
        tmp = self.path / (SEALED_MARK + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.path / SEALED_MARK)
        self._release()
        return info

    def close(self) -> None:
        """Close without sealing (e.g. on error); the shard stays open for repair."""
        self._unregister()
        with contextlib.suppress(Exception):
            self.env.close()
        self._release()

    def _unregister(self) -> None:
        _registry().pop(str(self.path), None)
        _WRITER_PATHS.discard(str(self.path))

    def _release(self) -> None:
        with contextlib.suppress(Exception):
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()


class CropReader:
    """Reads crop bytes by (shard, key). Safe to hand to DataLoader workers (fork or spawn)."""

    def __init__(self, shards_dir: str | Path):
        self.shards_dir = Path(shards_dir)

    def __getstate__(self):
        return {"shards_dir": self.shards_dir}

    def __setstate__(self, state):
        self.__init__(state["shards_dir"])

    def environment(self, shard: str) -> lmdb.Environment:
        """This process's shared read handle on ``shard``, opened on first use."""
        path = self.shards_dir / shard
        envs = _registry()
        env = envs.get(str(path))
        if env is None:
            if not (path / "data.mdb").is_file():
                raise ShardError(f"crop shard not found: {path}")
            # A sealed shard has no writer, so no reader table is needed; an open shard is
            # still being written and needs LMDB's reader locks to stay consistent.
            # A read-only mount cannot hold the lock table: then read without it.
            lock = not is_sealed(path) and os.access(path, os.W_OK)
            try:
                env = lmdb.open(str(path), readonly=True, lock=lock,
                                readahead=False, max_readers=1024, subdir=True, max_dbs=0)
            except lmdb.Error as exc:
                raise ShardError(f"cannot open crop shard {path}: {exc}") from exc
            envs[str(path)] = env
        return env

    def get(self, shard: str, key: str) -> bytes:
        return self.get_many([(shard, key)])[0]

    def get_many(self, refs: Sequence[tuple[str, str]], missing_ok: bool = False) -> list:
        """Fetch many crops, one read transaction per shard touched. A crop that is missing,
        on a damaged page or in a shard that cannot be opened raises, or with ``missing_ok``
        comes back as None (the others are still read)."""
        out: list[bytes | None] = [None] * len(refs)
        by_shard: dict[str, list[int]] = defaultdict(list)
        for i, (shard, _) in enumerate(refs):
            by_shard[shard].append(i)
        for shard, positions in by_shard.items():
            try:
                self._read(shard, refs, positions, out)
            except (lmdb.Error, ShardError) as exc:
                if not missing_ok:
                    if isinstance(exc, ShardError):
                        raise
                    raise ShardError(f"crop shard {shard} is damaged ({type(exc).__name__}); "
                                     "run vidmine-store verify --repair") from exc
                for i in positions:   # a damaged page costs only the crops on it
                    with contextlib.suppress(lmdb.Error, ShardError):
                        self._read(shard, refs, [i], out)
            missing = [refs[i] for i in positions if out[i] is None]
            if missing and not missing_ok:
                raise MissingCropError(f"{len(missing)} crop(s) missing from shard {shard}, "
                                       f"e.g. key {missing[0][1]!r}; run verify --repair")
        return out

    def _read(self, shard: str, refs, positions: list[int], out: list) -> None:
        env = self.environment(shard)
        for _ in range(2):
            try:
                with env.begin(buffers=False) as txn:
                    for i in positions:
                        out[i] = txn.get(refs[i][1].encode())
                return
            except lmdb.MapResizedError:
                env.set_mapsize(0)  # the writer grew the map: adopt its new size

    def keys(self, shard: str) -> Iterable[str]:
        env = self.environment(shard)
        with env.begin() as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                yield bytes(key).decode()

    def close(self) -> None:
        """Close this process's read handles on shards of this directory (not a writer's)."""
        envs = _registry()
        for path in [p for p in envs if Path(p).parent == self.shards_dir
                     and p not in _WRITER_PATHS]:
            envs.pop(path).close()


def shard_names(shards_dir: str | Path) -> list[str]:
    root = Path(shards_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "data.mdb").is_file())


def writer_alive(shard_dir: Path) -> bool:
    """True while some process holds the shard's writer lock (a killed writer holds none)."""
    lock_path = shard_dir / WRITER_LOCK
    if not lock_path.exists():
        return False
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False
