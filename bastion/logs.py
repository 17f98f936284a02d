"""Structured logs: every line is one JSON object; one access line per request.

The access line carries the request id, key prefix, account, model, endpoint, status, error code,
upstream, latency, upstream time, time to first token, tokens and cost. Never the key itself, and
never a prompt or a completion: request and answer bodies are not logged at all.
"""

from __future__ import annotations

import logging
import logging.config
import time
from typing import Any

import orjson

ACCESS = logging.getLogger("bastion.access")
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


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


class AccessHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The access log's handler. Once configured, `write_access_lines` writes lines straight to its
    stream (one dict and one orjson call each, one write for all), skipping the LogRecord and formatter:
    logging's generic path cost more than the rest of the access line's work, on every request."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        global _access_handler
        _access_handler = self

    def write_lines(self, many: list[dict[str, Any]]) -> None:
        stamp = timestamp(time.time())
        text = "".join(
            orjson.dumps(
                {"ts": stamp, "level": "info", "logger": ACCESS.name, "msg": "request", **fields}, default=str
            ).decode()
            + "\n"
            for fields in many
        )
        self.acquire()
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": "access line", "name": ACCESS.name}))
        finally:
            self.release()


_access_handler: AccessHandler | None = None


def write_access_lines(many: list[dict[str, Any]]) -> None:
    """Access lines: in one write through the AccessHandler's fast path when logging is Bastion's own
    JSON setup, else through logging like any other line (an embedding application's handlers)."""
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    handler = _access_handler
    if handler is not None and ACCESS.handlers == [handler]:
        handler.write_lines(many)
    else:
        for fields in many:
            ACCESS.info("request", extra=fields)


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's own loggers, and Bastion's, as JSON lines on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    access = {"class": f"{__name__}.AccessHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
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


def configure(level: str) -> None:
    logging.config.dictConfig(uvicorn_log_config(level))
