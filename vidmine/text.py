"""Text that is safe on a terminal, whatever a file name holds.

A file name may contain any byte but ``/`` and NUL: escape sequences (``ESC[2J`` clears the
screen), carriage returns that overwrite a line, newlines that fake one, bytes that are not
UTF-8. Every text output passes names through :func:`safe_name`, and whole reports through
:func:`safe_text`, which keeps their own line breaks.
"""
from __future__ import annotations

import re

# C0 and C1 controls, DEL, and lone surrogates (Python's stand-in for bytes that are not UTF-8).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_UNSAFE_BUT_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    char = match.group()
    if "\udc80" <= char <= "\udcff":   # a byte that was not UTF-8, as os.fsdecode keeps it
        return f"\\x{ord(char) - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")


def safe_name(name: object) -> str:
    """``str(name)`` with every control character and undecodable byte written as an escape
    (``\\x1b``, ``\\r``, ``\\n``, ``\\xff``): one line that prints as itself."""
    return _UNSAFE.sub(_escape, str(name))


def safe_text(text: str) -> str:
    """Like :func:`safe_name` but keeps newlines and tabs: for whole multi-line reports."""
    return _UNSAFE_BUT_LINES.sub(_escape, text)
