"""Finding videos: scan a folder recursively, wait until files stop growing, hash contents.

A file still being copied must never be mined: a path is *stable* once its size and mtime
have stayed the same for ``stable_s`` seconds. The content hash lets a copy of a video that
is already mined (or being mined) be skipped instead of mined twice.

Only regular files (or links to them) are mined. A FIFO, socket, device, or a dangling or
looping link with a video's name is registered as *skipped* with the reason, once, so that
it shows in ``status`` and never blocks a worker or keeps a run waiting; should it become a
regular file later (a link whose target arrives), the next scan queues it.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, update

from vidmine.storage.db import Index
from vidmine.storage.schema import videos

from .config import VIDEO_EXTENSIONS

HASH_CHUNK = 1 << 20
NOT_REGULAR = "not a regular file"   # prefix of the reason stored on such a file's row
_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISDIR, "a directory"))


def not_regular(path: str | Path) -> str | None:
    """Why ``path`` cannot be mined as a file (following links), or None for a regular file."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{NOT_REGULAR}: a symbolic link loop"
        if os.path.islink(path):
            return f"{NOT_REGULAR}: a dangling symbolic link"
        return f"{NOT_REGULAR}: cannot stat it ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    return f"{NOT_REGULAR}: {kind}"


def scan(root: str | Path) -> tuple[list[Path], dict[Path, str]]:
    """Files under ``root`` with a video's extension (case-insensitive), as absolute paths:
    (regular files, sorted; {path: reason} of the others). A symlink keeps its own name;
    copies of one content are caught by the content hash."""
    root = Path(root).absolute()
    found, odd = [], {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(VIDEO_EXTENSIONS):
                path = Path(dirpath, name)
                if (reason := not_regular(path)) is None:
                    found.append(path)
                else:
                    odd[path] = reason
    return sorted(set(found)), odd


@dataclass
class Discovery:
    unstable: int                      # videos found that are not stable yet
    skipped: dict[str, str]            # path -> reason, of files newly found not regular


def discover(index: Index, root: str | Path, watch: StabilityWatch) -> Discovery:
    """One scan of ``root``: register the stable videos as pending and the files that are
    not regular as skipped. Each path goes to the index once per watch in each role, so a
    daemon's scans of an unchanged folder write nothing; a path that turns from one into
    the other (a link whose target arrives) is handled again."""
    found, odd = scan(root)
    ready = watch.ready(found)
    fresh = [p for p in ready if p not in watch.registered]
    register(index, fresh)
    watch.registered.update(fresh)
    skipped = {str(p): reason for p, reason in odd.items() if p not in watch.reported}
    if skipped:
        index.add_videos({"path": p, "status": "skipped", "error": reason}
                         for p, reason in skipped.items())
        watch.reported.update(odd)
    return Discovery(len(found) - len(ready), skipped)


@dataclass
class StabilityWatch:
    """Remembers (size, mtime) per path across scans; a path is ready once unchanged for
    ``stable_s`` seconds. Files older than ``stable_s`` at first sight are ready at once.
    Also which paths :func:`discover` has registered, and which it reported not regular."""
    stable_s: float
    _seen: dict[Path, tuple[int, float, float]] = field(default_factory=dict)
    registered: set[Path] = field(default_factory=set)
    reported: set[Path] = field(default_factory=set)

    def ready(self, paths: list[Path]) -> list[Path]:
        now = time.time()
        out = []
        for path in paths:
            try:
                st = path.stat()
            except OSError:
                self._seen.pop(path, None)
                continue
            sig = (st.st_size, st.st_mtime)
            prev = self._seen.get(path)
            if prev is None or prev[:2] != sig:
                since = st.st_mtime if now - st.st_mtime >= self.stable_s else now
                self._seen[path] = (*sig, since)
                prev = self._seen[path]
            if now - prev[2] >= self.stable_s:
                out.append(path)
        return out


def register(index: Index, paths: list[Path]) -> int:
    """Add stable files to the index as pending (known paths are left alone; one skipped
    earlier for not being a regular file is queued again). Returns how many were new."""
    records = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        records.append({"path": str(path), "size": st.st_size, "mtime": st.st_mtime})
    if records:
        index.requeue_videos(("skipped",), paths=[r["path"] for r in records],
                             error_prefix=NOT_REGULAR)
    return index.add_videos(records)


def content_hash(path: str | Path) -> str:
    """blake2b of the file's bytes. Opened without blocking and checked to be a regular file
    first: a FIFO swapped in after the scan must not hang the worker."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{NOT_REGULAR} (it changed after the scan)")
        h = hashlib.blake2b(digest_size=20)
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def duplicate_of(index: Index, video_id: int, digest: str) -> str | None:
    """Record the video's hash; return the path of another video with the same content that
    is done or being mined (so this one is skipped), else None."""
    with index.write() as conn:
        conn.execute(update(videos).where(videos.c.id == video_id).values(content_hash=digest))
        other = conn.execute(select(videos.c.path).where(
            (videos.c.content_hash == digest) & (videos.c.id != video_id)
            & (videos.c.status.in_(("done", "claimed")))).order_by(videos.c.id).limit(1)).first()
    return other[0] if other else None
