"""Shared fixtures. Integration fixtures start real processes and always stop them."""

from __future__ import annotations

import pytest

from tests.live import Live


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    topology = Live.start(tmp_path_factory.mktemp("live"))
    yield topology
    topology.stop()


@pytest.fixture
async def harness():
    """An in-process ADS server (both variants) with the topology's snapshot at 0 %;
    stopped even when setting it up fails (a server left running keeps pytest alive)."""
    from tests.xds_fakes import GROUP, AdsHarness, snapshot

    h = await AdsHarness.start()
    try:
        h.cache.set_snapshot(GROUP, snapshot(0))
        yield h
    finally:
        await h.stop()


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A private PostgreSQL server for one test module."""
    from turnout.postgres import PostgresServer

    server = PostgresServer.start(log_path=tmp_path_factory.mktemp("pg") / "postgresql.log")
    yield server
    server.stop()
