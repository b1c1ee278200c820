"""Structured JSON logs (SPEC §7) with redaction of tokens, signatures and blob data.

Log through :func:`event`: ``event(log, "session.closed", room=..., peer=..., code=4001)``.
Every record goes through :mod:`roomsync.redaction`: values under sensitive keys are
replaced by ``"***"`` and anything shaped like a JWT or a URL signature is masked wherever
it appears, so a token pasted into a message cannot leak.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from ..redaction import redact, redact_text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            out.update(redact(fields))
        if record.exc_info:
            out["exc"] = redact_text(self.formatException(record.exc_info))
        out["event"] = redact_text(out["event"])
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        extra = " ".join(f"{k}={v}" for k, v in redact(fields).items())
        line = f"{record.levelname.lower():7} {redact_text(record.getMessage())} {extra}".rstrip()
        if record.exc_info:
            line += "\n" + redact_text(self.formatException(record.exc_info))
        return line


def setup_logging(level: str = "info", fmt: str = "json", stream: Any = None) -> None:
    """Configure the ``roomsync`` logger once for a process (CLI ``serve``)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("roomsync")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def event(logger: logging.Logger, name: str, *, level: int = logging.INFO, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})
