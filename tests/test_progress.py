"""Progress off a terminal: a plain line every few seconds, not a redraw per update."""
from __future__ import annotations

import io
import time

from vidmine.progress import LineProgress, progress_bar


def test_a_log_gets_a_few_lines_not_thousands_of_redraws():
    log = io.StringIO()
    bar = progress_bar(total=5000, desc="embed", unit="batch", file=log, every_s=0.05)
    assert isinstance(bar, LineProgress)   # a StringIO is not a terminal
    t0 = time.monotonic()
    for _ in range(5000):
        bar.update(1)
        if bar.n % 1000 == 0:
            time.sleep(0.06)
    bar.set_postfix(loss="0.5000")
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert 2 <= len(lines) <= 8 and time.monotonic() - t0 < 5
    assert lines[-1].startswith("embed: 5000/5000 batch (100 %)") and "loss=0.5000" in lines[-1]


def test_iteration_counts_and_disable_prints_nothing():
    log = io.StringIO()
    assert list(progress_bar(range(3), desc="x", file=log, every_s=0)) == [0, 1, 2]
    assert log.getvalue().splitlines()[-1].startswith("x: 3/3 it (100 %)")
    quiet = io.StringIO()
    assert sum(progress_bar(range(4), file=quiet, disable=True)) == 6
    assert quiet.getvalue() == ""
