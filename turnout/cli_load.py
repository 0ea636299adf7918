"""``turnout load``: synthetic inference through the ingress at a given rate, built from the
model's signature (streams for a decoupled model), with progress and a summary. Gates decide
from real requests: a quiet service (or a demo) gives them none, its steps stay
inconclusive and the rollout pauses; this gives them some."""

from __future__ import annotations

import time
from pathlib import Path

import click

from triton_slots.loadgen import LoadGenerator
from turnout.cli_common import client_for, dir_option, friendly
from turnout.errors import ApiError


def _model(client: object, given: str | None) -> str:
    if given:
        return given
    active = sorted({m["name"] for m in client.models()  # type: ignore[attr-defined]
                     if m["stage"] == "active"})
    if len(active) != 1:
        raise ApiError(f"the stack serves {len(active)} active models "
                       f"({', '.join(active) or 'none'}): name one with --model")
    return active[0]


def register(main: click.Group) -> None:
    @main.command("load")
    @dir_option
    @click.option("--model", default=None,
                  help="The model to call (default: the only active one).")
    @click.option("--rate", default=20.0, show_default=True, type=click.FloatRange(0.1, 10_000),
                  help="Requests (streams, for a decoupled model) per second, in total.")
    @click.option("--duration", default=60.0, show_default=True, type=click.FloatRange(1, 86_400),
                  help="Seconds to send for.")
    @click.option("--concurrency", default=2, show_default=True, type=click.IntRange(1, 64),
                  help="Clients sending at once.")
    @click.option("--ingress", default=None, metavar="HOST:PORT",
                  help="Envoy's ingress as this host reaches it (default: the address the "
                       "control plane reports).")
    @friendly
    def load(directory: Path, model: str | None, rate: float, duration: float,
             concurrency: int, ingress: str | None) -> None:
        """Send signature-driven inference requests through the ingress (following the
        traffic split, like real clients), printing progress every 5 s and a summary.
        Exit status 1 if any request failed."""
        client = client_for(directory)
        name = _model(client, model)
        address = ingress or client.status()["ingress"]
        click.echo(f"sending {rate:g} req/s of {name} to {address} for {duration:g} s "
                   f"({concurrency} clients)")
        generator = LoadGenerator(address, model=name, concurrency=concurrency, rate=rate,
                                  keep_latencies=True).start()
        started = time.monotonic()
        try:
            while (elapsed := time.monotonic() - started) < duration:
                time.sleep(min(5.0, duration - elapsed))
                ok, failed = generator.counts()
                elapsed = time.monotonic() - started
                click.echo(f"  {elapsed:5.0f} s: {ok} ok, {failed} failed "
                           f"({(ok + failed) / max(elapsed, 1e-9):.1f} req/s)")
        finally:
            stats = generator.stop()
        click.echo(f"{stats.sent} sent, {stats.ok} ok, {stats.failed} failed; latency p50 "
                   f"{stats.percentile(50):.1f} ms, p99 {stats.percentile(99):.1f} ms")
        for error, count in stats.errors.most_common(5):
            click.echo(f"  {count} x {error}")
        if stats.failed:
            raise SystemExit(1)
