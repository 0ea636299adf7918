"""The names Envoy routes by, in their one home (triton_slots.routing), as
docs/observability.md documents them for Prometheus users: the split's clusters per slot,
the preview clusters kept apart, and every cluster the topology builds attributed to its
slot the way the gates attribute requests."""

from __future__ import annotations

from tests.xds_fakes import snapshot
from triton_slots.routing import SLOT_NAMES, split_clusters, split_slot
from xds_server import type_urls as t


def test_the_split_clusters_of_a_slot():
    assert split_clusters("blue") == ("slot_blue", "slot_blue_ha", "slot_blue_http",
                                      "slot_blue_http_ha")
    assert split_clusters("green") == ("slot_green", "slot_green_ha", "slot_green_http",
                                       "slot_green_http_ha")


def test_a_cluster_belongs_to_a_slots_split_or_to_none():
    for slot in SLOT_NAMES:
        for cluster in split_clusters(slot):
            assert split_slot(cluster) == slot
    for other in ("slot_blue_preview", "slot_green_http_preview", "turnout_xds", "slot_red",
                  "slot_blue_ha_ha", "", "SLOT_BLUE"):
        assert split_slot(other) is None, other


def test_every_cluster_the_topology_builds_is_a_split_or_a_preview_cluster():
    built = set(snapshot(30).resources(t.CLUSTER))
    split = {c for c in built if split_slot(c) is not None}
    assert split == {c for slot in SLOT_NAMES for c in split_clusters(slot)}
    assert built - split == {f"{c}_preview" for slot in SLOT_NAMES
                             for c in (f"slot_{slot}", f"slot_{slot}_http")}
