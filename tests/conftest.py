"""Shared fixtures. Integration fixtures start real processes and always stop them."""

from __future__ import annotations

import pytest

from tests.live import Live


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    topology = Live.start(tmp_path_factory.mktemp("live"))
    yield topology
    topology.stop()
