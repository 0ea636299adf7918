"""TLS handshake failures, seen. gRPC core refuses a client with no certificate or an
untrusted one during the handshake and never tells Python; it only prints a line on the
process's stderr. :class:`HandshakeWatch` puts a pipe in front of file descriptor 2,
forwards every byte unchanged to where stderr went before (the control plane's log), and
reports each failed handshake with its reason."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

NO_CERTIFICATE = "no_certificate"
UNTRUSTED_CERTIFICATE = "untrusted_certificate"


def classify(line: str) -> str | None:
    """The refusal reason of one gRPC core log line, or None if it is not one."""
    if "Handshake failed" not in line:
        return None
    if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in line or "NO_CERTIFICATE" in line:
        return NO_CERTIFICATE
    return UNTRUSTED_CERTIFICATE


class HandshakeWatch:
    def __init__(self, on_failure: Callable[[str], None]) -> None:
        self._on_failure = on_failure
        self._saved: int | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        read_end, write_end = os.pipe()
        self._saved = os.dup(2)
        os.dup2(write_end, 2)
        os.close(write_end)
        self._thread = threading.Thread(target=self._pump, args=(read_end, self._saved),
                                        name="handshake-watch", daemon=True)
        self._thread.start()

    def _pump(self, read_end: int, out: int) -> None:
        pending = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(read_end, 65536):
                os.write(out, chunk)
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    reason = classify(line.decode(errors="replace"))
                    if reason is not None:
                        with contextlib.suppress(Exception):
                            self._on_failure(reason)
                pending = pending[-4096:]
        os.close(read_end)

    def stop(self) -> None:
        """Give stderr back; the pump ends when the pipe's last writer closes."""
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._saved = None
