"""Errors that storage raises for users: each carries a one-line message fit for a CLI."""
from vidmine.errors import VidmineError


class StorageError(VidmineError, RuntimeError):
    """Base of every storage error; CLIs print ``str(err)`` and exit non-zero."""


class DatabaseError(StorageError):
    """The SQL index cannot be opened or used (bad URL, server down, locked too long)."""


class StoreFullError(StorageError):
    """The disk holding a crop shard is full; what was committed before stays readable."""


class ShardError(StorageError):
    """A crop shard is missing, unreadable, or already has a writer."""


class MissingCropError(StorageError):
    """A crop row points at bytes that are not in its shard (run `verify --repair`)."""
