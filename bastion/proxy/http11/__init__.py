"""A lean HTTP/1.1 client for the upstream leg: one keep-alive pool per provider, httptools parsing.

Why not aiohttp's client: the request path needs one thing from it, POST a body and relay the answer as
it arrives, and aiohttp's general machinery for that (URL objects, header multidicts, request and
response objects with their own streams, traces, timer contexts) was ~120 us of CPU per request here,
a fifth of everything Bastion spent. This client writes a precomputed request head and the body in one
write, parses the answer with httptools (llhttp, the parser uvicorn serves with) and hands body bytes
over as they arrive, with back-pressure (it stops reading while the relay has not taken them).

Timeouts follow the provider's settings: `connect` bounds opening a connection (TLS included); `read` is
the longest silence while an answer is awaited, first byte included. A connection the server closed
while idle in the pool is noticed and dropped; a request that meets such a close before any byte of its
answer is sent again on a fresh connection, once (a body still streaming from the client is not).
"""

from bastion.proxy.http11.errors import UpstreamFailure
from bastion.proxy.http11.pool import Http11Pool
from bastion.proxy.http11.response import Http11Response

__all__ = ["Http11Pool", "Http11Response", "UpstreamFailure"]
