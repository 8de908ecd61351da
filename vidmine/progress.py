"""Progress of long work on stderr: a tqdm bar on a terminal, and off a terminal (CI, logs,
``| tee``) one plain line every few seconds instead of thousands of carriage-return redraws.

:func:`progress_bar` takes tqdm's arguments and returns an object with the part of tqdm's
interface vidmine uses (iteration, ``update``, ``total``, ``set_postfix``, ``close``).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

LINE_EVERY_S = 10.0


def progress_bar(iterable: Iterable | None = None, *, total: float | None = None,
                 desc: str = "", unit: str = "it", disable: bool = False, initial: int = 0,
                 file: TextIO | None = None, position: int | None = None,
                 leave: bool = True, every_s: float = LINE_EVERY_S) -> Any:
    file = file if file is not None else sys.stderr
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if not disable and _is_terminal(file):
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=file,
                    position=position, leave=leave, dynamic_ncols=True)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, disable=disable,
                        initial=initial, file=file, every_s=every_s)


def _is_terminal(file: TextIO) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """Counts like tqdm and prints ``desc: n/total unit (p %), rate, elapsed, postfix`` at
    most once every ``every_s`` seconds, and once more when closed."""

    def __init__(self, iterable: Iterable | None = None, *, total: float | None = None,
                 desc: str = "", unit: str = "it", disable: bool = False, initial: int = 0,
                 file: TextIO | None = None, every_s: float = LINE_EVERY_S):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.disable, self.n, self.file, self.every_s = disable, initial, file, every_s
        self.postfix = ""
        self._start_n = initial
        self._t0 = self._last = time.monotonic()
        self._closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._print(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def refresh(self) -> None:
        """tqdm redraws here; a log gets its next line on schedule instead."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.n != self._start_n:
            self._print(time.monotonic())

    def _print(self, now: float) -> None:
        if self.disable or self.file is None:
            return
        elapsed = now - self._t0
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        done = f"{self.n:g}/{self.total:g}" if self.total else f"{self.n:g}"
        pct = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done} {self.unit}{pct}, {rate:.1f} {self.unit}/s, "
              f"{elapsed:.0f} s{tail}", file=self.file, flush=True)
