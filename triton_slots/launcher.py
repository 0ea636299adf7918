"""Start and stop local CPU Triton servers from the ``nvidia-pytriton`` wheel.

Each server runs ``tritonserver`` in explicit model-control mode on free loopback ports,
with the Python backend whose stub matches the running interpreter.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from triton_slots.procs import ManagedProcess, ProcessError, free_port, wait_http
from triton_slots.slot import Endpoint


class TritonNotFoundError(ProcessError):
    """``nvidia-pytriton`` (which ships ``tritonserver``) is not installed."""


def _pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise TritonNotFoundError(
            "Triton is not installed here: the local stack needs `pip install "
            "'turnout[local]'` (in a checkout: `make venv`)") from exc
    return Path(pytriton.__file__).parent / "tritonserver"


def tritonserver_binary() -> Path:
    return _pytriton_root() / "bin" / "tritonserver"


def prepare_backends(target: Path) -> Path:
    """A backend directory with the Python backend and this interpreter's stub. Idempotent."""
    stub_name = "triton_python_backend_stub"
    stub = target / "python" / stub_name
    if stub.exists():
        return target
    root = _pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    source_stub = root / "python_backend_stubs" / version / stub_name
    if not source_stub.exists():
        raise TritonNotFoundError(f"no Python backend stub for Python {version} in {root}")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(root / "backends", partial)
    shutil.copy2(source_stub, partial / "python" / stub_name)
    partial.rename(target)
    return target


def triton_environment() -> dict[str, str]:
    """The server's environment: this Python's libpython first on LD_LIBRARY_PATH (the
    stub fails to load models otherwise) and this venv's ``bin`` first on PATH."""
    env = dict(os.environ)
    libs = Path(_pytriton_root()).parent.parent / "nvidia_pytriton.libs"
    paths = [str(sysconfig.get_config_var("LIBDIR")), str(libs)]
    if env.get("LD_LIBRARY_PATH"):
        paths.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(paths)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@dataclass
class TritonServer:
    """A running ``tritonserver`` process and the endpoint it serves."""

    endpoint: Endpoint
    process: ManagedProcess

    @classmethod
    def start(
        cls,
        *,
        name: str,
        model_repository: Path,
        backends: Path,
        log_path: Path,
        models: Iterable[str] = (),
        host: str = "127.0.0.1",
        endpoint: Endpoint | None = None,
        model_control: str = "explicit",
        extra_args: Iterable[str] = (),
    ) -> TritonServer:
        """``endpoint`` fixes the address and ports (servers found by one DNS name share
        their ports); else free ports on ``host``. ``model_control`` other than
        ``explicit`` makes a server Turnout refuses (tests); ``extra_args`` go to
        tritonserver as they are (a restricted repository API, for instance)."""
        endpoint = endpoint or Endpoint(host, free_port(host), free_port(host),
                                        free_port(host))
        argv = [
            str(tritonserver_binary()),
            f"--model-repository={model_repository}",
            f"--backend-directory={backends}",
            f"--model-control-mode={model_control}",
            f"--http-address={host}",
            f"--http-port={endpoint.http_port}",
            f"--grpc-address={host}",
            f"--grpc-port={endpoint.grpc_port}",
            f"--metrics-address={host}",
            f"--metrics-port={endpoint.metrics_port}",
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=5",
            *[f"--load-model={m}" for m in models],
            *extra_args,
        ]
        process = ManagedProcess.spawn(
            name, argv, log_path=log_path, env=triton_environment()
        )
        return cls(endpoint, process)

    def wait_ready(self, *, timeout: float = 60.0) -> float:
        """Block until ``/v2/health/ready`` answers 200; returns the seconds waited."""
        return wait_http(self.process, f"{self.endpoint.http_url}/v2/health/ready",
                         timeout=timeout, what=self.process.name)

    def stop(self) -> None:
        self.process.stop()

