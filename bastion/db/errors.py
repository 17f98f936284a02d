"""What a management operation refuses; it wrote nothing."""

from __future__ import annotations


class StoreError(ValueError):
    """Bad input for a management operation; nothing was written."""


class NotFound(StoreError):
    """The account or key named does not exist."""


class Conflict(StoreError):
    """The name is taken."""


class UnknownModels(StoreError):
    """A key would allow models the models file does not serve (a typo, or a model not added yet)."""

    def __init__(self, unknown: list[str], served: list[str]) -> None:
        shown = ", ".join(served[:8]) + (", ..." if len(served) > 8 else "") if served else "none"
        names = ", ".join(f"'{model}'" for model in unknown)
        super().__init__(f"the models file does not serve {names} (it serves: {shown})")
        self.unknown = unknown
