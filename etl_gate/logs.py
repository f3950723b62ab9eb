"""Logging setup shared by the supervisor and workers (plain or JSON lines)."""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

import orjson

LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname,
               "logger": record.name, "pid": record.process, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def setup_logging(level: str = "INFO", log_format: str | None = None, *,
                  stream: TextIO | None = None) -> None:
    """Log to stderr (or ``stream``) as ``log_format``: "text" (default) or "json".

    ``ETL_GATE_LOG_JSON``, when set, overrides the format: "0" or "false" means
    text, any other value JSON lines.
    """
    env = os.environ.get("ETL_GATE_LOG_JSON", "")
    if env:
        log_format = "text" if env.lower() in ("0", "false") else "json"
    log_format = log_format or "text"
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format: one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
