"""Client-chosen strings (node ids, groups, NACK details) made fit for one log line."""

from __future__ import annotations


def printable(text: str, limit: int = 80) -> str:
    """Escaped (no forged log lines) and cut to ``limit`` characters."""
    return text[:limit].encode("unicode_escape").decode("ascii") + (
        "..." if len(text) > limit else "")
