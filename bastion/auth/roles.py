"""A dashboard member's roles in an account (operators have none: they run every account)."""

ROLES = ("owner", "developer", "viewer")
