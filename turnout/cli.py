"""The ``turnout`` command line."""

from __future__ import annotations

import json
import time
import webbrowser
from pathlib import Path
from typing import Any

import click

from turnout import stack as local_stack
from turnout.cli_common import client_for, dir_option, friendly
from turnout.cli_context import register as register_context
from turnout.cli_load import register as register_load
from turnout.cli_models import register as register_models
from turnout.cli_rollout import register as register_rollout
from turnout.cli_rollout import render_rollout
from turnout.cli_slots import register as register_slots
from turnout.cli_tokens import register as register_tokens
from turnout.controller.state import FINISHED


@click.group()
@click.version_option(package_name="turnout")
def main() -> None:
    """Blue-green and progressive rollouts of Triton models behind Envoy."""


@main.group()
def stack() -> None:
    """Start or stop the local stack (Triton pools, control plane, Envoy)."""


@stack.command("up")
@dir_option
@click.option("--per-slot", default=1, show_default=True, type=click.IntRange(1, 8),
              help="Triton servers per slot.")
@click.option("--model", "models", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A Triton model directory (config.pbtxt + version dirs) to serve from "
                   "both slots; repeat for several. Default: the example classifier.")
@click.option("--tls", is_flag=True,
              help="Mutual TLS between Envoy and the xDS port: a local CA, a server "
                   "certificate and one client certificate per proxy (in DIR/pki).")
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(1, 8),
              help="Control-plane replicas: above 1, a private PostgreSQL they share (one "
                   "leads rollouts, all serve xDS) and one Envoy per replica.")
@click.option("--api-tls", is_flag=True,
              help="Serve the API and dashboard over HTTPS, with a certificate from the "
                   "stack's CA (DIR/pki/ca.pem: give it to `turnout context add --ca`).")
@click.option("--stream-max-age", "stream_max_age_s", default=120.0, show_default=True,
              type=click.FloatRange(0, 86400), metavar="SECONDS",
              help="A gRPC ModelStreamInfer stream (one stream, many requests) ends this "
                   "old and reopens on the current weights; 0: no bound (streams keep the "
                   "split they opened on). See docs/streaming.md.")
@friendly
def stack_up(directory: Path, per_slot: int, models: tuple[Path, ...], tls: bool,
             replicas: int, api_tls: bool, stream_max_age_s: float) -> None:
    """Start blue and green Triton pools serving your models (or the example classifier),
    the control plane, Envoy and Prometheus."""
    info = local_stack.up(directory, per_slot=per_slot, models=list(models) or None,
                          tls=tls, progress=click.echo, replicas=replicas,
                          api_tls=api_tls, stream_max_age_s=stream_max_age_s)
    click.echo(f"ingress {info.ingress}  (KServe v2 over gRPC and HTTP; models "
               f"{', '.join(info.models)})")
    click.echo(f"api     {info.api_url}  (admin token in {info.directory}/stack.json, 0600)")
    click.echo(f"dashboard  turnout dashboard --dir {info.directory}  (a sign-in link; or "
               "sign in on the page with a token)")
    click.echo(f"xds     {info.transport}"
               + ("" if tls else "  (any local process may connect; --tls for mTLS)"))
    click.echo("preview send x-turnout-slot: SLOT and x-turnout-preview-key: KEY "
               "(preview_key in stack.json)")
    for replica in info.replicas:
        click.echo(f"replica {replica['name']}: api {replica['api_url']}, xds "
                   f"{replica['xds_port']}, envoy admin {replica['envoy_admin']}")
    if info.postgres_url:
        click.echo(f"store   {info.postgres_url}")
    click.echo(f"logs    {Path(info.directory) / 'logs'}")


@stack.command("down")
@dir_option
@friendly
def stack_down(directory: Path) -> None:
    """Stop every process of the local stack."""
    stopped = local_stack.down(directory, progress=click.echo)
    click.echo(f"stack stopped ({len(stopped)} processes)")


@stack.command("restart-controlplane")
@dir_option
@friendly
def stack_restart_controlplane(directory: Path) -> None:
    """Restart the control plane (same ports); it resumes any rollout where it was."""
    pid = local_stack.restart_control_plane(directory)
    click.echo(f"control plane running again (pid {pid})")


@stack.command("restart-envoy")
@dir_option
@click.option("--node", default=None, help="Only this Envoy (envoy-0, envoy-1, ...); "
              "default: each in turn.")
@click.option("--parent-shutdown", "parent_shutdown", type=click.FloatRange(1, 3600),
              default=local_stack.PARENT_SHUTDOWN_S, show_default=True,
              help="Seconds after the new process starts when the old one ends: longer than "
                   "the longest request or stream that should finish on it.")
@friendly
def stack_restart_envoy(directory: Path, node: str | None, parent_shutdown: float) -> None:
    """Hot-restart Envoy (a new binary or bootstrap takes effect): the new process takes
    the listening sockets over while the old one drains; requests in flight finish."""
    done = local_stack.restart_envoy(directory, node=node, parent_shutdown_s=parent_shutdown,
                                     progress=click.echo)
    click.echo(f"restarted {len(done)} Envoy(s) without closing the ingress")


@main.group()
def traffic() -> None:
    """Move traffic between the slots."""


@traffic.command("set")
@dir_option
@click.option("--green", type=click.IntRange(0, 100), required=True,
              help="Percent of unpinned traffic to the green slot (blue gets the rest).")
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=10.0, show_default=True,
              help="Seconds to wait for every proxy to ACK.")
@friendly
def traffic_set(directory: Path, green: int, timeout: float) -> None:
    """Set the split, wait for every Envoy to ACK, print the convergence time."""
    reply = client_for(directory).set_traffic(green=green, timeout=timeout)
    push = reply["push"]
    nodes = push["nodes"]
    acked = sum(1 for n in nodes if n["outcome"] == "acked")
    click.echo(
        f"blue {reply['weights']['blue']}%  green {reply['weights']['green']}%: "
        f"{acked}/{len(nodes)} proxies ACKed in {push['seconds'] * 1e3:.1f} ms"
    )
    for node in nodes:
        if node["outcome"] != "acked":
            click.echo(f"  {node['node_id']}: {node['outcome']} {node['detail']}", err=True)
    if not push["converged"]:
        raise click.ClickException("not every proxy accepted the new weights")


@main.command()
@dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the full status as JSON.")
@click.option("--watch", is_flag=True, help="Refresh every second until the rollout ends.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
@friendly
def status(directory: Path, as_json: bool, watch: bool, interval: float) -> None:
    """Weights, slots, proxies and their ACKed versions, last NACK, and the rollout."""
    client = client_for(directory)
    data = client.status()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not watch:
        click.echo(render_status(data))
        return
    while True:
        click.clear()
        click.echo(time.strftime("%H:%M:%S ") + "turnout status --watch (Ctrl-C to stop)\n")
        click.echo(render_status(data))
        rollout = data.get("rollout")
        if rollout is None or rollout["phase"] in FINISHED:
            break
        time.sleep(interval)
        data = client.status()


@main.command()
@dir_option
@click.option("--open", "open_browser", is_flag=True,
              help="Also open the link in this machine's web browser.")
@friendly
def dashboard(directory: Path, open_browser: bool) -> None:
    """A link to the live dashboard that signs the browser in with a fresh read session
    (a one-time code in the link's fragment, valid 60 s; the token never leaves the CLI)."""
    client = client_for(directory)
    code = client.dashboard_code()
    link = f"{client.base_url}/#code={code['code']}"
    click.echo(f"{link}\n(sign-in link: one use, within {code['expires_in']:g} s)")
    if open_browser:
        webbrowser.open(link)


register_models(main)
register_rollout(main)
register_tokens(main)
register_context(main)
register_slots(main)
register_load(main)


def render_status(data: dict[str, Any]) -> str:
    weights = data["weights"]
    lines = [
        f"ingress  {data['ingress']}",
        f"weights  blue {weights['blue']}%  green {weights['green']}%",
        "slots",
    ]
    for slot, endpoints in data["slots"].items():
        for e in endpoints:
            ready = "ready" if e["ready"] else "NOT READY"
            lines.append(f"  {slot:<6} {e['endpoint']:<22} {ready}")
    xds = data["xds"]
    transport = data.get("xds_transport") or {}
    if transport:
        note = "client certificates required" if transport.get("client_certificates") \
            else "PLAINTEXT: any process reaching the port may claim any node id"
        lines.append(f"xds      {transport['transport']} ({note})")
    telemetry = data.get("access_log") or {}
    if telemetry:
        refused = sum(telemetry.get("refused", {}).values())
        lines.append(f"access log  from {telemetry['accepted_from']}; "
                     f"{telemetry['received']} requests counted, {refused} entries refused")
    replica = data.get("replica") or {}
    if replica.get("shared"):
        role = "LEADER" if replica["leading"] else "follower"
        epoch = f", epoch {replica['epoch']}" if replica.get("epoch") else ""
        lines.append(f"replica  {replica['replica']} ({role}{epoch}) on {replica['store']}")
        if replica.get("deposed"):
            lines.append(f"  deposed {replica['deposed']}")
        for other in data.get("replicas", []):
            lines.append(f"  {other['replica']:<12} {'leader' if other['leader'] else '':<7}"
                         f"{other['in_sync']}/{other['proxies']} proxies in sync "
                         f"(rds {other['rds_version'][:8]})")
    if data.get("store_error"):
        lines.append(f"STORE    {data['store_error']}")
    notices = data.get("notifications") or {}
    if notices.get("pending") or notices.get("failed"):
        lines.append(f"webhooks {notices.get('pending', 0)} notice(s) pending, "
                     f"{notices.get('failed', 0)} failed (see the control plane's log)")
    lines.append("proxies")
    if not xds["proxies"]:
        lines.append("  (none connected)")
    for proxy in xds["proxies"]:
        versions = " ".join(f"{t}={v[:8]}" for t, v in proxy["acked"].items())
        state = "in sync" if proxy["in_sync"] else "BEHIND"
        claimed = proxy.get("claimed_group")
        group = f"  (node.cluster {claimed!r}: served group {xds['group']!r})" \
            if claimed and claimed != xds["group"] else ""
        lines.append(f"  {proxy['node']:<12} {state:<8} {versions}{group}")
    push = data.get("last_push") or {}
    if push.get("stragglers"):
        lines.append(f"last push  {push['acked']}/{len(push['nodes'])} ACKed; stragglers: "
                     + ", ".join(push["stragglers"]))
    nack = xds.get("last_nack")
    if nack:
        lines.append(
            f"last NACK  node {nack['node']} {nack['type']} version {nack['version'][:8]}: "
            f"{nack['message']}"
        )
    else:
        lines.append("last NACK  none")
    if data.get("rollout"):
        lines.append("")
        lines.extend(render_rollout(data["rollout"]))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
