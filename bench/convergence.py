"""Convergence of a weight change on one real Envoy, under inference load: our ADS push
versus Envoy's own file-based dynamic configuration (RDS from a file replaced by an atomic
rename), both measured the same way: from the decision to the new route table's version
showing in Envoy's /config_dump (polled). For ADS the control plane's own publish -> ACK
time is reported too. Reproduce: ``.venv/bin/python -m bench.convergence``."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from google.protobuf.json_format import MessageToDict

from bench.common import local_stack, summary_ms, write_json
from triton_slots.loadgen import LoadGenerator
from triton_slots.procs import ManagedProcess, free_port
from turnout.client import ApiClient
from turnout.proxy import envoy_binary
from turnout.topology import split_routes

ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


def route_version(admin: str) -> str:
    url = admin + "/config_dump?resource=dynamic_route_configs"
    with urllib.request.urlopen(url, timeout=2) as response:
        dump = json.load(response)
    configs = dump.get("configs", [])
    return configs[0].get("version_info", "") if configs else ""


def wait_version(admin: str, version: str, timeout: float = 10.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            if route_version(admin) == version:
                return time.perf_counter()
        except OSError:  # admin not listening yet
            time.sleep(0.05)
        time.sleep(0.0005)
    raise TimeoutError(f"version {version} never showed in {admin}")


def ads_pushes(info, pushes: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    api = ApiClient(info.api_url, info.token, actor="bench")
    server_side, end_to_end = [], []
    for i in range(pushes):
        green = (i * 7 + 3) % 100
        started = time.perf_counter()
        push = api.set_traffic(green=green)["push"]
        seen = wait_version(info.envoy_admin, push["versions"]["rds"])
        server_side.append(push["seconds"])
        end_to_end.append(seen - started)
    return {"server_publish_to_ack": summary_ms(server_side),
            "decision_to_config_dump": summary_ms(end_to_end)}


def _routes_file(path: Path, version: int, green: int) -> None:
    table = split_routes("ingress_routes", clusters={"blue": "slot_blue", "green": "slot_green"},
                         weights={"blue": 100 - green, "green": green}, validate_clusters=False)
    body = MessageToDict(table, preserving_proto_field_name=True)
    body["@type"] = ROUTE_TYPE
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"version_info": str(version), "resources": [body]}))
    os.replace(partial, path)  # an atomic rename is what Envoy's file watch sees


def file_baseline(info, pushes: int, workdir: Path) -> dict[str, object]:  # type: ignore[no-untyped-def]
    routes = workdir / "routes.json"
    _routes_file(routes, 0, 0)
    admin_port, listen_port = free_port(), free_port()
    endpoint = {s: info.endpoints(s)[0] for s in ("blue", "green")}

    def cluster(slot: str) -> dict:
        return {"name": f"slot_{slot}", "type": "STATIC", "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                                 "HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}}},
                "load_assignment": {"cluster_name": f"slot_{slot}", "endpoints": [{
                    "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": endpoint[slot].grpc_port}}}}]}]}}

    bootstrap = {
        "node": {"id": "file-baseline", "cluster": "file"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1",
                                               "port_value": listen_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress", "codec_type": "AUTO",
                        "rds": {"route_config_name": "ingress_routes", "config_source": {
                            "path_config_source": {"path": str(routes)},
                            "resource_api_version": "V3"}},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http."
                                     "router.v3.Router"}}]}}]}]}],
            "clusters": [cluster("blue"), cluster("green")]},
    }
    config = workdir / "file-envoy.yaml"
    config.write_text(yaml.safe_dump(bootstrap))
    proxy = ManagedProcess.spawn(
        "envoy file-baseline",
        [envoy_binary(), "-c", str(config), "--disable-hot-restart", "--concurrency", "1"],
        log_path=workdir / "file-envoy.log")
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        wait_version(admin, "0", timeout=20)
        load = LoadGenerator(f"127.0.0.1:{listen_port}", model="classifier",
                             concurrency=4, rate=200).start()
        seconds = []
        for i in range(1, pushes + 1):
            started = time.perf_counter()
            _routes_file(routes, i, (i * 7 + 3) % 100)
            seconds.append(wait_version(admin, str(i)) - started)
        stats = load.stop()
    finally:
        proxy.stop()
    return {"decision_to_config_dump": summary_ms(seconds),
            "load": {"sent": stats.sent, "failed": stats.failed}}


def run(pushes: int) -> dict[str, object]:
    with local_stack() as info, tempfile.TemporaryDirectory() as tmp:
        load = LoadGenerator(info.ingress, model="classifier", concurrency=4, rate=200).start()
        try:
            ads = ads_pushes(info, pushes)
        finally:
            stats = load.stop()
        ads["load"] = {"sent": stats.sent, "failed": stats.failed}
        baseline = file_baseline(info, pushes, Path(tmp))
    result = {"pushes": pushes, "ads": ads, "file_rds": baseline}
    print(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pushes", type=int, default=200)
    args = parser.parse_args()
    print(f"written {write_json('convergence', run(args.pushes))}")


if __name__ == "__main__":
    main()
