"""The bootstrap proxyless gRPC clients read (the real client is exercised end to end in
test_integration_proxyless.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from xds_server.grpc_bootstrap import grpc_bootstrap, write_grpc_bootstrap
from xds_server.transport import TlsFiles


def test_plaintext_bootstrap_lists_every_replica_in_order():
    doc = grpc_bootstrap(["10.0.0.1:18000", "10.0.0.2:18000"], node_id="checkout-1")
    assert doc == {
        "xds_servers": [
            {"server_uri": "10.0.0.1:18000", "channel_creds": [{"type": "insecure"}],
             "server_features": ["xds_v3"]},
            {"server_uri": "10.0.0.2:18000", "channel_creds": [{"type": "insecure"}],
             "server_features": ["xds_v3"]},
        ],
        "node": {"id": "checkout-1", "cluster": "turnout", "locality": {}},
    }


def test_tls_bootstrap_names_the_certificate_files_and_the_group():
    tls = TlsFiles(Path("/p/client.pem"), Path("/p/client.key"), Path("/p/ca.pem"))
    doc = grpc_bootstrap(["cp:18000"], node_id="n", cluster="payments", tls=tls)
    [server] = doc["xds_servers"]
    assert server["channel_creds"] == [{"type": "tls", "config": {
        "ca_certificate_file": "/p/ca.pem", "certificate_file": "/p/client.pem",
        "private_key_file": "/p/client.key"}}]
    assert doc["node"]["cluster"] == "payments"


def test_no_server_is_refused():
    with pytest.raises(ValueError, match=r"^grpc_bootstrap needs at least one control-plane "
                                         r"address$"):
        grpc_bootstrap([], node_id="n")


def test_written_owner_only_as_json(tmp_path):
    path = write_grpc_bootstrap(tmp_path / "b.json", ["127.0.0.1:1"], node_id="w")
    assert path == tmp_path / "b.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == grpc_bootstrap(["127.0.0.1:1"], node_id="w")
    # Written for people too: indented by two spaces.
    assert path.read_text().splitlines()[1].startswith('  "') and \
        not path.read_text().splitlines()[1].startswith('   ')
