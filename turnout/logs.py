"""The control plane's log lines: text (default) or one JSON object per line, each
carrying the current rollout's id and step (``--log-format json`` or
``TURNOUT_LOG_FORMAT=json``)."""

from __future__ import annotations

import json
import logging
import time
from enum import StrEnum


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class _Current:
    """The rollout in progress (one at a time), for every log line."""

    rollout: str | None = None
    step: int | None = None


CURRENT = _Current()


def set_rollout(rollout: str | None, step: int | None) -> None:
    CURRENT.rollout, CURRENT.step = rollout, step


class RolloutFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.rollout = CURRENT.rollout
        record.step = CURRENT.step
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "rollout": getattr(record, "rollout", None),
            "step": getattr(record, "step", None),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure(fmt: LogFormat = LogFormat.TEXT, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RolloutFilter())
    if fmt is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
