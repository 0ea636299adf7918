"""The load generator cannot pass by accident: a crashed thread fails the run."""

from __future__ import annotations

import pytest

from triton_slots.loadgen import LoadError, LoadGenerator
from triton_slots.signature import ModelSignature

SIG = ModelSignature.from_config({
    "name": "m", "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [2]}],
    "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [2]}]})


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_crashed_thread_raises_instead_of_reporting_a_quiet_run():
    # Request data that cannot become a tensor: the worker crashes before sending.
    load = LoadGenerator("127.0.0.1:1", model="m", concurrency=2, limit=10, signature=SIG,
                         requests=[{"x": object()}])  # type: ignore[dict-item]
    with pytest.raises(LoadError, match="2 load thread\\(s\\) crashed"):
        load.start().wait()


def test_requests_that_fail_are_counted_not_raised():
    load = LoadGenerator("127.0.0.1:1", model="m", concurrency=1, limit=3, signature=SIG)
    stats = load.start().wait()
    assert (stats.ok, stats.failed, stats.sent) == (0, 3, 3)
    assert sum(stats.errors.values()) == 3
