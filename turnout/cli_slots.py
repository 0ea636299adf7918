"""``turnout slots``: each slot's servers, and servers added to or removed from a slot by
hand (servers Turnout did not start: other hosts, fixed addresses). A server added is
brought up to its slot's model set and checked before it gets any traffic."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from turnout.cli_common import client_for, dir_option, friendly
from turnout.errors import ApiError


def _row(slot: str, server: dict[str, Any], address: str) -> dict[str, Any] | None:
    return next((s for s in server.get(slot, {}).get("servers", [])
                 if s["endpoint"] == address), None)


def _wait(client: Any, slot: str, address: str, timeout: float) -> None:
    """Until the server serves (exit 0) or fails its bring-up (exit 1), saying each change."""
    deadline = time.monotonic() + timeout
    said = ""
    while True:
        row = _row(slot, client.slots(), address)
        state = row["state"] if row else "waiting"
        if state != said:
            click.echo(f"  {address}: {state}" + (f" ({row['reason']})"
                                                   if row and row["reason"] else ""))
            said = state
        if state == "serving":
            return
        if state == "failed":
            raise ApiError(f"{address} was not admitted to slot {slot}: {row['reason']} "
                           "(it is tried again every few seconds until removed)")
        if time.monotonic() > deadline:
            raise ApiError(f"{address} is still {state} after {timeout:g} s; `turnout slots "
                           "list` shows when it serves")
        time.sleep(0.5)


def register(main: click.Group) -> None:
    @main.group()
    def slots() -> None:
        """Each slot's servers; add or remove one by hand."""

    @slots.command("list")
    @dir_option
    @click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
    @friendly
    def list_slots(directory: Path, as_json: bool) -> None:
        """Each slot's weight, where its servers come from, and each server's state."""
        described = client_for(directory).slots()
        if as_json:
            click.echo(json.dumps(described, indent=2))
            return
        for name, slot in described.items():
            click.echo(f"{name}  weight {slot['weight']}%  source: {slot['source']}"
                       + (f"  error: {slot['error']}" if slot["error"] else ""))
            if not slot["servers"]:
                click.echo("  (no servers)")
            for server in slot["servers"]:
                click.echo(f"  {server['endpoint']:<28} {server['state']:<12} "
                           f"{server['reason']}".rstrip())

    @slots.command("add-endpoint")
    @dir_option
    @click.argument("slot")
    @click.argument("host")
    @click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(1, 65535),
                  help="Triton's gRPC port (Envoy's traffic).")
    @click.option("--http-port", default=8000, show_default=True, type=click.IntRange(1, 65535),
                  help="Triton's HTTP port (health checks, model control).")
    @click.option("--metrics-port", default=8002, show_default=True,
                  type=click.IntRange(1, 65535), help="Triton's metrics port (Prometheus).")
    @click.option("--wait/--no-wait", default=True, show_default=True,
                  help="Wait until the server serves or fails its bring-up.")
    @click.option("--timeout", default=300.0, show_default=True, type=click.FloatRange(1),
                  help="Seconds to wait.")
    @friendly
    def add_endpoint(directory: Path, slot: str, host: str, grpc_port: int, http_port: int,
                     metrics_port: int, wait: bool, timeout: float) -> None:
        """Add the Triton server at HOST to SLOT (its model control must be explicit, its
        Triton version that of the other servers). It gets the slot's models, checked by
        digest, before any traffic."""
        client = client_for(directory)
        client.add_endpoint(slot, host, grpc_port=grpc_port, http_port=http_port,
                            metrics_port=metrics_port)
        address = f"[{host}]:{grpc_port}" if ":" in host else f"{host}:{grpc_port}"
        click.echo(f"added {address} to slot {slot}; it gets the slot's models before "
                   "any traffic")
        if wait:
            _wait(client, slot, address, timeout)

    @slots.command("remove-endpoint")
    @dir_option
    @click.argument("slot")
    @click.argument("address", metavar="HOST:GRPC_PORT")
    @friendly
    def remove_endpoint(directory: Path, slot: str, address: str) -> None:
        """Take the server at HOST:GRPC_PORT (as `slots list` shows it) out of SLOT: it
        leaves Envoy's endpoints within a second; nothing is unloaded from it."""
        left = client_for(directory).remove_endpoint(slot, address)
        click.echo(f"removed {address} from slot {slot}; {len(left['servers'])} server(s) "
                   "left")
