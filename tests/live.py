"""A live local topology for integration tests: real Triton pools, a real Envoy, and the
control plane running in-process on its own event-loop thread (so tests can reach into
it, for instance to publish a snapshot Envoy must NACK)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triton_slots.launcher import TritonServer
from triton_slots.metrics import requests_served
from triton_slots.procs import free_port
from triton_slots.slot import Slot
from turnout.config import ControlPlaneConfig
from turnout.controlplane import ControlPlane
from turnout.proxy import EnvoyProxy
from turnout.seed import slot_repository
from turnout.stack import StackInfo, start_slots
from turnout.tokens import Role, mint


class LoopThread:
    """An asyncio loop on a daemon thread; ``run`` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class Live:
    directory: Path
    servers: dict[str, list[TritonServer]]
    plane: ControlPlane
    loop: LoopThread
    envoy: EnvoyProxy

    @property
    def ingress(self) -> str:
        return f"127.0.0.1:{self.plane.config.ingress_port}"

    def served(self) -> dict[str, int]:
        """Requests counted by each slot's Triton servers so far."""
        return {
            slot: requests_served([s.endpoint for s in pool])
            for slot, pool in self.servers.items()
        }

    def set_green(self, percent: int):
        from turnout.weights import Weights

        return self.loop.run(self.plane.set_weights(Weights.with_green(percent)))

    @classmethod
    def start(cls, directory: Path, *, per_slot: int = 1,
              models: list[Path] | None = None, delta: bool = False,
              **settings: Any) -> Live:
        """``delta``: the Envoy speaks incremental ADS (``DELTA_GRPC``); ``settings``:
        more control-plane configuration fields."""
        servers = start_slots(directory, per_slot=per_slot, models=models)
        loop: LoopThread | None = None
        plane: ControlPlane | None = None
        admin, secret = mint("test-admin", Role.ADMIN)
        admin_port = free_port()
        settings.setdefault("shadow_admins", (f"http://127.0.0.1:{admin_port}",))
        try:
            config = ControlPlaneConfig(
                state_dir=directory, tokens=(admin,), ingress_port=free_port(),
                slots={name: Slot(name, tuple(s.endpoint for s in pool),
                                  slot_repository(directory, name))
                       for name, pool in servers.items()},
                **settings,
            )
            loop = LoopThread()
            plane = loop.run(_make_plane(config))
            envoy = EnvoyProxy.start(
                node_id="envoy-test", node_cluster=config.group, xds_host="127.0.0.1",
                xds_port=plane.xds_port, work_dir=directory, log_dir=directory / "logs",
                delta=delta, admin_port=admin_port,
            )
            try:
                envoy.wait_ready()
            except BaseException:
                envoy.stop()
                raise
        except BaseException:
            if plane is not None and loop is not None:
                loop.run(plane.stop())
            if loop is not None:
                loop.close()
            for pool in servers.values():
                for server in pool:
                    server.stop()
            raise
        live = cls(directory, servers, plane, loop, envoy)
        # A stack record so the real CLI can talk to this control plane.
        StackInfo(
            directory=str(directory), ingress=live.ingress,
            api_url=f"http://127.0.0.1:{plane.api_port}", token=secret,
            preview_key=config.preview_key,
            xds_port=plane.xds_port, envoy_admin=envoy.admin_url,
            models=[m.name for m in models] if models else ["classifier"],
            slots={slot: [s.endpoint.as_dict() for s in pool] for slot, pool in servers.items()},
        ).save()
        return live

    def stop(self) -> None:
        self.envoy.stop()
        self.loop.run(self.plane.stop())
        self.loop.close()
        for pool in self.servers.values():
            for server in pool:
                server.stop()


async def _make_plane(config: ControlPlaneConfig) -> ControlPlane:
    plane = ControlPlane(config)
    await plane.start()
    return plane
