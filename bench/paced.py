"""The paced streaming upstream (its own process): `python -m bench.paced PORT`.

POST /v1/chat/completions with `"stream": true` sends a first chunk after 50 ms, then a chunk every 10 ms
(20 chunks in all), then `data: [DONE]`. Upstream model `hold` stops after the first chunk until
POST /release (used to hold many streams open at once). Without `stream` it answers a fixed completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import orjson
from aiohttp import web

from bench.payloads import completion_json, paced_chunks

FIRST_DELAY = 0.050
CHUNK_INTERVAL = 0.010
CHUNKS = paced_chunks(20)
DONE = b"data: [DONE]\n\n"
COMPLETION = completion_json().encode()


class Release:
    """Held streams wait on the current event; /release sets it and starts a new one."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def fire(self) -> None:
        self.event.set()
        self.event = asyncio.Event()


async def chat(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    if not body.get("stream"):
        return web.Response(body=COMPLETION, content_type="application/json")
    hold = body.get("model") == "hold"
    release: Release = request.app["release"]
    event = release.event
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    await asyncio.sleep(FIRST_DELAY)
    for index, event_text in enumerate(CHUNKS):
        if index:
            await asyncio.sleep(CHUNK_INTERVAL)
        await response.write(event_text.encode())
        if index == 0 and hold:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), 300)
    await response.write(DONE)
    await response.write_eof()
    return response


async def release(request: web.Request) -> web.Response:
    request.app["release"].fire()
    return web.Response(text="released")


async def health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def app() -> web.Application:
    application = web.Application()
    application["release"] = Release()
    application.router.add_post("/v1/chat/completions", chat)
    application.router.add_post("/release", release)
    application.router.add_get("/healthz", health)
    return application


def main() -> None:
    port = int(sys.argv[1])
    web.run_app(app(), host="127.0.0.1", port=port, print=None, access_log=None, backlog=4096)


if __name__ == "__main__":
    main()
