"""The web dashboard: server-rendered pages under /dashboard for account holders and operators.

It runs on the FastAPI side of the application (never on the `/v1` hot path) and uses the same
management operations as the CLI and the admin API.
"""
