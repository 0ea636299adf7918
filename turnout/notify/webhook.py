"""One notification receiver: its URL, body format, signing secret and the kinds it wants."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from turnout.errors import ConfigError
from turnout.notify.events import Notification, NotificationKind

SIGNATURE_HEADER = "X-Turnout-Signature"  # sha256=<hex HMAC of timestamp.body>
TIMESTAMP_HEADER = "X-Turnout-Timestamp"
DELIVERY_HEADER = "X-Turnout-Delivery"
#: The notice's id again, under the name receivers' idempotency layers look for: a notice
#: delivered twice (at least once: a crash between the answer and its record) has one key.
IDEMPOTENCY_HEADER = "Idempotency-Key"


class BodyFormat(StrEnum):
    JSON = "json"
    SLACK = "slack"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``timestamp.body`` (the timestamp guards
    against replays; receivers should refuse old ones)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


_EMOJI = {"started": ":rocket:", "step_entered": ":arrow_forward:", "gate_failed": ":x:",
          "paused": ":pause_button:", "rolling_back": ":rewind:", "rolled_back": ":rewind:",
          "promoted": ":white_check_mark:", "aborted": ":no_entry:", "failed": ":boom:"}


#: What a receiver's ``secretEnv`` may name: variables meant for webhooks only.
SECRET_ENV_PREFIX = "TURNOUT_WEBHOOK_"


@dataclass(frozen=True)
class WebhookTarget:
    url: str
    format: BodyFormat = BodyFormat.JSON
    secret: str = ""
    kinds: frozenset[NotificationKind] = field(default_factory=lambda: frozenset(
        NotificationKind))

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"webhook url must be http(s)://host..., got {self.url!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "webhook") -> WebhookTarget:
        """From ``{url, format, secret | secretEnv, events}`` (config or policy)."""
        secret = str(data.get("secret", ""))
        if data.get("secretEnv"):
            name = str(data["secretEnv"])
            if not name.startswith(SECRET_ENV_PREFIX) or len(name) == len(SECRET_ENV_PREFIX):
                raise ConfigError(f"{where}: secretEnv must name a variable starting with "
                                  f"{SECRET_ENV_PREFIX} (a policy may not read the control "
                                  f"plane's other secrets), got {name[:60]!r}")
            secret = os.environ.get(name, "")
            if not secret:
                raise ConfigError(f"{where}: environment variable {data['secretEnv']} "
                                  "is empty or unset")
        try:
            kinds = frozenset(NotificationKind(k) for k in data.get("events", list(
                NotificationKind)))
            body = BodyFormat(data.get("format", "json"))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return cls(str(data.get("url", "")), body, secret, kinds)

    @property
    def shown(self) -> str:
        """The URL for logs: scheme and host only (a Slack URL's path is its secret)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "") \
            + ("/..." if parts.path not in ("", "/") or parts.query else "")

    def wants(self, notice: Notification) -> bool:
        return notice.kind in self.kinds

    def body(self, notice: Notification) -> bytes:
        if self.format is BodyFormat.SLACK:
            text = (f"{_EMOJI.get(notice.kind, '')} *{notice.name}* ({notice.model}) "
                    f"{notice.kind.replace('_', ' ')}: step {notice.step}/{notice.steps} at "
                    f"{notice.traffic}% on {notice.candidate_slot}. {notice.message}")
            return json.dumps({"text": text, "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text}}]}).encode()
        return json.dumps({"type": "turnout.rollout." + notice.kind,
                           **notice.as_dict()}).encode()

    def headers(self, notice: Notification, body: bytes, timestamp: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: notice.id,
                   IDEMPOTENCY_HEADER: notice.id, TIMESTAMP_HEADER: timestamp}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, timestamp, body)
        return headers
