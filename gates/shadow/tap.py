"""Reading Envoy's tap of shadowed requests: one admin session (``POST /tap``) per proxy,
streaming one JSON trace per recorded exchange (request and response headers, bodies,
trailers; a body over the buffer limit comes truncated and says so). Only exchanges whose
response carries the shadow mark are recorded (Envoy's mirror)."""

from __future__ import annotations

import codecs
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from triton_slots.routing import SHADOW_HEADER, TAP_CONFIG_ID

#: Bytes of each body Envoy keeps per exchange (request and response each); a larger body
#: is recorded truncated (counted, never compared).
MAX_BODY_BYTES = 1024 * 1024


def tap_request(max_body_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The admin tap session's configuration: shadow-marked exchanges, JSON traces."""
    return {
        "config_id": TAP_CONFIG_ID,
        "tap_config": {
            "match": {"http_response_headers_match": {"headers": [
                {"name": SHADOW_HEADER, "present_match": True}]}},
            "output_config": {
                "sinks": [{"format": "JSON_BODY_AS_BYTES", "streaming_admin": {}}],
                "max_buffered_rx_bytes": max_body_bytes,
                "max_buffered_tx_bytes": max_body_bytes,
            },
        },
    }


async def traces(session: aiohttp.ClientSession, admin_url: str, *,
                 max_body_bytes: int = MAX_BODY_BYTES,
                 on_open: Callable[[], None] = lambda: None
                 ) -> AsyncIterator[dict[str, Any]]:
    """Each trace Envoy at ``admin_url`` records, as it comes, until cancelled (closing
    the session's request ends the tap in Envoy). ``on_open`` is called once Envoy has
    accepted the session (recording starts then)."""
    decoder = json.JSONDecoder()
    async with session.post(f"{admin_url.rstrip('/')}/tap", json=tap_request(max_body_bytes),
                            timeout=aiohttp.ClientTimeout(total=None, sock_read=None)
                            ) as response:
        if response.status != 200:
            raise RuntimeError(f"{admin_url}: tap refused: HTTP {response.status} "
                               f"{(await response.text())[:200]}")
        on_open()
        buffer = ""
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        async for chunk in response.content.iter_any():
            buffer += text.decode(chunk)  # a chunk may end inside a character
            while True:
                buffer = buffer.lstrip()
                if not buffer:
                    break
                try:
                    trace, end = decoder.raw_decode(buffer)
                except json.JSONDecodeError:
                    break  # incomplete: wait for more
                buffer = buffer[end:]
                yield trace
