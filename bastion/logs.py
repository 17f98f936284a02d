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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's own loggers, and Bastion's, as JSON lines on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"level": level.upper()},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"level": "WARNING"},
            "alembic": {"level": "WARNING" if level.lower() != "debug" else "DEBUG"},
        },
    }


def configure(level: str) -> None:
    logging.config.dictConfig(uvicorn_log_config(level))
