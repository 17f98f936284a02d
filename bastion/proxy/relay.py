"""Turning upstream answers into client answers: JSON bodies, SSE streams, and upstream errors."""

from __future__ import annotations

import re
from typing import Any

import orjson

from bastion.billing.estimate import text_chars
from bastion.errors import ApiError, upstream_error
from bastion.proxy.providers import UpstreamResponse
from bastion.proxy.routing import Route
from bastion.proxy.sse import DONE, DONE_EVENT, SSEFramer, event_data, split_events

_ERROR_BODY_LIMIT = 64 * 1024
_NULL_USAGE = re.compile(rb'"usage"\s*:\s*null')
_STATUS_CODES = {
    400: "invalid_request",
    404: "not_found",
    409: "conflict",
    413: "request_too_large",
    422: "invalid_request",
    429: "rate_limit_exceeded",
}


def upstream_status_error(status: int, body: bytes, retry_after: str | None, route: Route) -> ApiError:
    """Map a non-2xx upstream answer to the envelope.

    4xx keeps its status and the upstream's own message so callers see why (a model that rejects
    `tools`, a context too long). 401/403/407 are Bastion's credentials being refused upstream: telling the
    client its own key is wrong would mislead it, so those count as upstream failures, like 5xx.
    """
    model = route.model.id
    if status < 400 or status >= 500 or status in (401, 403, 407):
        return upstream_error(f"The upstream for model '{model}' answered HTTP {status}.")
    fields = _error_fields(body[:_ERROR_BODY_LIMIT])
    message = _scrub(fields.get("message") or f"The upstream rejected the request (HTTP {status}).", route)
    code = fields.get("code") if isinstance(fields.get("code"), str) else _STATUS_CODES.get(status)
    error_type = fields.get("type") if isinstance(fields.get("type"), str) else "invalid_request_error"
    if status == 429:
        code, error_type = "rate_limit_exceeded", "rate_limit_error"
    param = fields.get("param") if isinstance(fields.get("param"), str) else None
    headers = {"retry-after": retry_after} if status == 429 and retry_after else None
    return ApiError(status, code or "upstream_rejected", error_type, message, param, headers)


def _error_fields(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return {"message": text[:500]} if text and not text.startswith("<") else {}
    if not isinstance(parsed, dict):
        return {}
    error = parsed.get("error")
    if isinstance(error, dict):
        return error
    if isinstance(error, str):  # {"error": "text"} (e.g. TGI)
        return {"message": error}
    if isinstance(parsed.get("message"), str):  # vLLM's older top-level shape
        return parsed
    if isinstance(parsed.get("detail"), str):  # FastAPI-based servers
        return {"message": parsed["detail"]}
    return {}


def _scrub(message: str, route: Route) -> str:
    if not isinstance(message, str):
        message = str(message)
    for secret in route.target.provider.secrets():
        message = message.replace(secret, "[redacted]")
    return message[:2000]


async def read_error(response: UpstreamResponse, route: Route) -> ApiError:
    body = await response.read()
    return upstream_status_error(response.status, body, response.headers.get("retry-after"), route)


async def read_json_answer(response: UpstreamResponse, route: Route) -> tuple[bytes, dict[str, Any]]:
    """The upstream's JSON answer with the public model id restored, and its parsed form."""
    body = await response.read()
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise upstream_error(f"The upstream for model '{route.model.id}' sent an answer that is not JSON.")
    restore = route.target.restore_model
    body, replaced = restore.count(body)
    if not replaced and not restore.identity and parsed.get("model") == route.target.deployment.model:
        parsed["model"] = route.model.id
        body = orjson.dumps(parsed)
    return body, parsed


def _reports_usage(data: bytes) -> bool:
    """Some `"usage"` in `data` is not null (OpenAI sends `"usage":null` in every chunk but the last)."""
    mentions = data.count(b'"usage"')
    return mentions > 0 and mentions != len(_NULL_USAGE.findall(data))


def _first_notable_event(block: bytes) -> int:
    """Where, in a block of whole events, the first event needing a look of its own starts (`[DONE]`, or
    a usage figure): everything before it is relayed as one piece. len(block) if there is none."""
    first = block.find(DONE)
    at = block.find(b'"usage"')
    while at >= 0 and (first < 0 or at < first):
        if not _NULL_USAGE.match(block, at):
            first = at
            break
        at = block.find(b'"usage"', at + 7)
    if first < 0:
        return len(block)
    previous_end = block.rfind(b"\n\n", 0, first)
    return 0 if previous_end < 0 else previous_end + 2


def usage_of(answer: Any) -> dict[str, Any] | None:
    """`usage` of an answer or chunk, or of the `response` a Responses API event carries."""
    if not isinstance(answer, dict):
        return None
    usage = answer.get("usage")
    if usage is None and isinstance(answer.get("response"), dict):
        usage = answer["response"].get("usage")
    return usage if isinstance(usage, dict) else None


class StreamRelay:
    """Per-read work on an SSE answer: frame events, restore the model id, note usage and [DONE].

    Events from one upstream read leave in one write: forwarding never waits for more bytes than the
    event being completed, and a burst of events does not cost a write each. A block of events with
    neither `[DONE]` nor a usage figure (nearly every read) is handled whole: one model-id rewrite and
    one text count over the block, no per-event work.
    """

    __slots__ = (
        "_done_marker",
        "_framer",
        "_restore",
        "_strip_usage_chunk",
        "done",
        "route",
        "text_chars",
        "usage",
    )

    def __init__(self, route: Route, strip_usage_chunk: bool = False, done_marker: bool = True) -> None:
        self.route = route
        self._framer = SSEFramer()
        self._done_marker = done_marker  # the Responses API ends without `data: [DONE]`
        self._restore = route.target.restore_model
        self._strip_usage_chunk = strip_usage_chunk  # Bastion asked for usage; the client did not
        self.done = False
        self.text_chars = 0
        self.usage: dict[str, Any] | None = None

    def feed(self, data: bytes) -> bytes:
        block = self._framer.feed_block(data)
        if not block or self.done:
            return b""
        cut = _first_notable_event(block)
        if cut == 0:
            return self._emit(split_events(block))
        head = block[:cut] if cut < len(block) else block
        self.text_chars += text_chars(head)
        out = self._restore(head)
        return out if cut == len(block) else out + self._emit(split_events(block[cut:]))

    def finish(self) -> bytes:
        """What to send once the upstream ended cleanly: any last event, then [DONE] if it was missing."""
        tail = self._emit(self._framer.finish())
        return tail if self.done or not self._done_marker else tail + DONE_EVENT

    def _emit(self, events: list[bytes]) -> bytes:
        out = []
        for event in events:
            if self.done:
                break
            payload = event_data(event)
            if payload is not None:
                if payload == DONE:
                    self.done = True
                    out.append(DONE_EVENT)
                    continue
                self.text_chars += text_chars(payload)
                if _reports_usage(payload) and self._note_usage(payload):
                    continue
                event = self._restore(event)
            out.append(event + b"\n\n")
        return b"".join(out)

    def _note_usage(self, payload: bytes) -> bool:
        """Record the chunk's usage; True if it is a usage-only chunk the client must not see."""
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return False
        usage = usage_of(chunk)
        if usage is None:
            return False
        self.usage = usage
        return self._strip_usage_chunk and chunk.get("choices") == []
