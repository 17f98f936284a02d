"""Bastion's reproducible benchmark: `python -m bench [--quick] [--out DIR]`.

nginx serves fixed answers (never the bottleneck), a small aiohttp server paces a stream for time to first
token, wrk drives load, and the gateway runs in production shape (PostgreSQL + Redis). Direct and
through-Bastion runs are interleaved and medians reported next to the targets of the performance issue.
"""
