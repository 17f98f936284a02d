"""What a management operation refuses; it wrote nothing."""

from __future__ import annotations


class StoreError(ValueError):
    """Bad input for a management operation; nothing was written."""


class NotFound(StoreError):
    """The account or key named does not exist."""


class Conflict(StoreError):
    """The name is taken."""
