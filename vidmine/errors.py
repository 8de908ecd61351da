"""Errors a person can act on. Every command line prints ``str(error)`` as one line and
exits 2 (``vidmine.cli.run_main``), so each message names the thing and what to do."""
from __future__ import annotations


class VidmineError(Exception):
    """Base of every error vidmine raises for its users."""


class UsageError(VidmineError):
    """A bad argument or a state the user can fix (mine first, build first, ...)."""


class ConfigError(VidmineError, ValueError):
    """A configuration file, setting or flag that cannot be used."""
