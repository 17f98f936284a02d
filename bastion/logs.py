"""Logs: JSON lines (one object per line), or readable text lines for a person at a terminal; one
access line per request.

BASTION_LOG_FORMAT chooses, once, at startup: `json`, `text`, or `auto` (text when stderr is a
terminal, else JSON). Text is coloured only on a terminal (and not with NO_COLOR set); JSON never
carries a terminal escape (uvicorn's `color_message` is dropped).

The access line carries the request id, key prefix, account, model, endpoint, status, error code,
upstream, latency, upstream time, time to first token, tokens and cost. Never the key itself, and
never a prompt or a completion: request and answer bodies are not logged at all.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import sys
import time
from typing import Any, TextIO

import orjson

ACCESS = logging.getLogger("bastion.access")
# Not copied into a line: the LogRecord's own attributes, and uvicorn's copy of its message with
# terminal colour escapes in it.
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


def timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds; the seconds part is formatted once per second."""
    whole = int(created)
    if whole != _second[0]:
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_second[1]}.{int((created - whole) * 1000):03d}Z"


_second: list[Any] = [-1, ""]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


WRITE_EVERY_SECONDS = 0.05  # access lines wait at most this long to be written
WRITE_AT_BYTES = 64 * 1024  # ...or until this much is waiting


class AccessHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The access log's handler. Once configured, `write_access_lines` writes lines straight to its
    stream (one dict and one orjson call each, one write for all), skipping the LogRecord and formatter:
    logging's generic path cost more than the rest of the access line's work, on every request.

    Inside an event loop the lines are written together every WRITE_EVERY_SECONDS (or WRITE_AT_BYTES):
    at concurrency 1 a write per request was a system call per request. `flush()` (a /metrics scrape's
    drain, the shutdown, logging's own at exit) writes what waits; a killed process loses that much."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []
        self._waiting_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        global _access_handler
        _access_handler = self

    def write_lines(self, many: list[dict[str, Any]]) -> None:
        stamp = timestamp(time.time())
        self._write(
            "".join(
                [
                    orjson.dumps(
                        {"ts": stamp, "level": "info", "logger": ACCESS.name, "msg": "request", **fields},
                        default=str,
                    ).decode()
                    + "\n"
                    for fields in many
                ]
            )
        )

    def _write(self, text: str) -> None:
        self._waiting.append(text)
        self._waiting_bytes += len(text)
        if self._waiting_bytes >= WRITE_AT_BYTES:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop to come back: now
                self.flush()
                return
            self._timer = loop.call_later(WRITE_EVERY_SECONDS, self.flush)

    def flush(self) -> None:
        """What waits, written; then the stream flushed."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        text = "".join(self._waiting) if self._waiting else ""
        self._waiting, self._waiting_bytes = [], 0
        self.acquire()
        try:
            if text and self.stream is not None:
                self.stream.write(text)
            super().flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": "access line", "name": ACCESS.name}))
        finally:
            self.release()


_access_handler: AccessHandler | None = None


def flush_access_lines() -> None:
    """The access lines waiting, written now (at shutdown)."""
    if _access_handler is not None:
        _access_handler.flush()


def write_access_lines(many: list[dict[str, Any]]) -> None:
    """Access lines: in one write through the AccessHandler's fast path when logging is Bastion's own
    setup (JSON or text), else through logging like any other line (an embedding application's handlers)."""
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    handler = _access_handler
    if handler is not None and ACCESS.handlers == [handler]:
        handler.write_lines(many)
    else:
        for fields in many:
            ACCESS.info("request", extra=fields)


class TextFormatter(logging.Formatter):
    """One readable line: local time, level, logger, message, then the record's extra fields."""

    def __init__(self, colour: bool = False) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname:<7}"
        if self.colour:
            level = _paint(level, _LEVEL_COLOURS.get(record.levelno, ""))
        name = record.name.removesuffix(".error")  # uvicorn's "uvicorn.error" logs more than errors
        line = f"{_clock(record.created)} {level} {name}: {record.getMessage()}"
        extras = [f"{k}={v}" for k, v in vars(record).items() if k not in _RESERVED]
        if extras:
            line += "  " + " ".join(extras)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


_LEVEL_COLOURS = {logging.DEBUG: "2", logging.WARNING: "33", logging.ERROR: "31", logging.CRITICAL: "1;31"}


def _paint(text: str, code: str) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if code else text


def _clock(created: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(created))


class TextAccessHandler(AccessHandler):
    """Access lines for a person: `22:30:01 200 POST /v1/chat/completions gpt-oss-120b 12.3ms key=...`."""

    def __init__(self, stream: Any = None, colour: bool = False) -> None:
        super().__init__(stream)
        self.colour = colour

    def write_lines(self, many: list[dict[str, Any]]) -> None:
        clock = _clock(time.time())
        self._write("".join([self.line(clock, fields) + "\n" for fields in many]))

    def line(self, clock: str, fields: dict[str, Any]) -> str:
        status = str(fields.get("status"))
        if self.colour:
            status = _paint(status, {"2": "32", "4": "33", "5": "31"}.get(status[:1], ""))
        parts = [clock, status, str(fields.get("method")), str(fields.get("path"))]
        if fields.get("model"):
            parts.append(str(fields["model"]))
        parts.append(f"{fields.get('latency_ms')}ms")
        if fields.get("error"):
            parts.append(str(fields["error"]))
        if fields.get("stream"):
            parts.append("stream")
        if "cost_usd" in fields:
            tokens = f"{fields['prompt_tokens']}+{fields['completion_tokens']}"
            parts.append(f"{tokens} tokens ${fields['cost_usd']}")
        if fields.get("key"):
            parts.append(f"key={fields['key']}")
        parts.append(str(fields.get("request_id")))
        return " ".join(parts)


def log_format(setting: str, stream: TextIO) -> tuple[str, bool]:
    """(json or text, colour): what BASTION_LOG_FORMAT means for this stream, decided once."""
    terminal = stream.isatty()
    chosen = "text" if setting == "text" or (setting == "auto" and terminal) else "json"
    return chosen, chosen == "text" and terminal and not os.environ.get("NO_COLOR")


def uvicorn_log_config(level: str, format: str = "json", colour: bool = False) -> dict[str, Any]:
    """uvicorn's own loggers, and Bastion's, on stderr: JSON lines, or text lines (`format="text"`)."""
    if format == "text":
        formatter: dict[str, Any] = {"()": TextFormatter, "colour": colour}
        access_class, access_options = TextAccessHandler, {"colour": colour}
    else:
        formatter, access_class, access_options = {"()": JsonFormatter}, AccessHandler, {}
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    access = {
        "class": f"{__name__}.{access_class.__name__}",
        "formatter": "main",
        "stream": "ext://sys.stderr",
        **access_options,
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"default": handler, "access": access},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            ACCESS.name: {"handlers": ["access"], "propagate": False},
            "uvicorn": {"level": level.upper()},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"level": "WARNING"},
            "alembic": {"level": "WARNING" if level.lower() != "debug" else "DEBUG"},
        },
    }


def configure(level: str, format_setting: str = "json") -> dict[str, Any]:
    """Logging as BASTION_LOG_LEVEL and BASTION_LOG_FORMAT say, for this process's stderr; returns the
    same configuration, fresh, for uvicorn (which applies it again, in each worker too)."""
    chosen, colour = log_format(format_setting, sys.stderr)
    logging.config.dictConfig(uvicorn_log_config(level, chosen, colour))
    return uvicorn_log_config(level, chosen, colour)
