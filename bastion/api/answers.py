"""Relaying an upstream's answer to the client: a JSON body, raw bytes (audio, text transcripts), or
an event stream, noting on the way what settlement needs (status, usage, text produced)."""

from __future__ import annotations

import time

from bastion.api.endpoints import Endpoint
from bastion.api.exchange import Exchange
from bastion.billing import Outcome
from bastion.errors import ApiError
from bastion.proxy.providers import UpstreamResponse
from bastion.proxy.relay import StreamRelay, read_error, read_json_answer, usage_of
from bastion.proxy.routing import Route


async def relay_answer(
    endpoint: Endpoint,
    route: Route,
    response: UpstreamResponse,
    exchange: Exchange,
    outcome: Outcome,
) -> None:
    if not 200 <= response.status < 300:
        raise await read_error(response, route)
    reading = time.perf_counter()
    if endpoint.answer == "audio" or (endpoint.answer == "json-or-text" and not _is_json(response)):
        # Audio, or a transcript as text/srt/vtt: the upstream's bytes and content type, as sent.
        data = await response.read()
        exchange.upstream_seconds += time.perf_counter() - reading
        outcome.status = response.status
        outcome.final()
        content_type = response.headers.get("content-type", "application/octet-stream")
        await exchange.respond(response.status, data, content_type.encode("latin-1"))
        return
    answer, parsed = await read_json_answer(response, route)
    exchange.upstream_seconds += time.perf_counter() - reading
    outcome.status = response.status
    outcome.usage = usage_of(parsed)
    outcome.answer_body = answer
    outcome.answer = parsed
    outcome.final()
    await exchange.respond(response.status, answer)


async def relay_stream(
    endpoint: Endpoint,
    route: Route,
    response: UpstreamResponse,
    exchange: Exchange,
    outcome: Outcome,
    hide_usage: bool,
) -> None:
    relay = StreamRelay(route, strip_usage_chunk=hide_usage, done_marker=endpoint.done_marker)
    exchange.start_stream()
    outcome.status = 200
    try:
        tail = b""
        while (data := await response.next_chunk()) is not None:
            out = relay.feed(data)
            if relay.done:
                tail = out  # the last events and [DONE] leave with the end of the body, in one write
                break
            if out:
                await exchange.write(out)
        tail += relay.finish()
        _final(outcome, relay)
        await exchange.end(tail)
        await response.finish()
    except ApiError as error:
        outcome.status = error.status
        _final(outcome, relay)
        await exchange.fail(error)
    finally:
        outcome.usage = relay.usage
        outcome.text_chars = relay.text_chars


def _final(outcome: Outcome, relay: StreamRelay) -> None:
    outcome.usage = relay.usage
    outcome.text_chars = relay.text_chars
    outcome.final()


def _is_json(response: UpstreamResponse) -> bool:
    return response.content_type == "application/json" or response.content_type.endswith("+json")
