"""Notifications of rollout transitions: what happened (:mod:`.events`), where it goes
(:class:`WebhookTarget`: a generic JSON body signed with HMAC-SHA256, or a Slack-compatible
body) and how it gets there (:mod:`.dispatcher`: stored with the decision, delivered from the
store per receiver, in order, retried with back-off, never waited for by a rollout)."""

from turnout.notify.dispatcher import Notifier, outgoing
from turnout.notify.events import Notification, NotificationKind, transition_notices
from turnout.notify.webhook import BodyFormat, WebhookTarget, sign

__all__ = ["BodyFormat", "Notification", "NotificationKind", "Notifier", "WebhookTarget",
           "outgoing", "sign", "transition_notices"]
