"""Logging set up in one place: readable text by default, one JSON object per line on demand."""

from __future__ import annotations

import json
import logging
import logging.config
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Record attributes that are not `extra=` fields; uvicorn's `color_message` repeats the message
# with terminal colour codes.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


class RequestIdFilter(logging.Filter):
    """Stamp each record with the id of the request being handled ("-" outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(level: str = "INFO", fmt: str = "text") -> dict[str, Any]:
    """A `logging.config.dictConfig` document: one stderr handler on the root logger, and
    uvicorn's own access log silenced since `idp.access` writes one line per request.

    `idp serve` hands the same document to uvicorn, which applies it again in every worker
    process of `--workers N`; without it workers would log nothing but warnings.
    """
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if fmt == "json"
        else {"format": "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "filters": ["request_id"],
                "formatter": "default",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            # Its lines name raw paths with query strings (tokens!) and duplicate idp.access.
            "uvicorn.access": {"handlers": [], "propagate": True, "level": "WARNING"},
            # Alembic announces each of its plugins at INFO when first imported.
            "alembic.runtime.plugins": {"level": "WARNING"},
            "py.warnings": {"handlers": [], "propagate": True},
        },
    }


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Install the handler of `logging_config` on the root logger; uvicorn's loggers and
    Python warnings propagate to it, so in JSON mode every line is one JSON object."""
    logging.config.dictConfig(logging_config(level, fmt))
    logging.captureWarnings(True)
