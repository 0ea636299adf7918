"""Process settings a long-lived xDS server takes at start: every proxy's connection is a
file descriptor, and the cyclic garbage collector must not scan every stream's state."""

from __future__ import annotations

import gc
import resource

from xds_server.server import raise_open_files_limit, tune_gc


def test_the_open_files_soft_limit_is_raised_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        lower = min(soft, hard, 256)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lower, hard))
        assert raise_open_files_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        assert raise_open_files_limit() == hard  # already there: unchanged
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_collector_freezes_what_exists_and_runs_less_often():
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (50_000, 50, 100)
        assert gc.get_freeze_count() > 0
        tune_gc(1234)
        assert gc.get_threshold() == (1234, 50, 100)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
