"""Readiness of slot endpoints, polled over Triton's HTTP API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import aiohttp

from triton_slots.slot import Endpoint


async def probe(session: aiohttp.ClientSession, endpoint: Endpoint) -> bool:
    """True when the server answers ``GET /v2/health/ready`` with 200."""
    try:
        async with session.get(f"{endpoint.http_url}/v2/health/ready") as response:
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def probe_all(
    session: aiohttp.ClientSession, endpoints: Iterable[Endpoint]
) -> dict[Endpoint, bool]:
    endpoints = list(endpoints)
    results = await asyncio.gather(*(probe(session, e) for e in endpoints))
    return dict(zip(endpoints, results, strict=True))
