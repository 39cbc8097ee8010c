"""The namespace helper itself: the NATs behave as their kind says, and nothing is left behind."""

from __future__ import annotations

import subprocess

import pytest
from netns import RENDEZVOUS_IP, nat_topology, udp_exchange


@pytest.mark.parametrize("kind", ["cone", "symmetric"])
def test_nat_kinds_map_ports_as_named(kind: str) -> None:
    with nat_topology(kind) as topology:
        spaces = topology.spaces
        names = list(spaces.names.values())
        seen = udp_exchange(spaces, "public", "peer-a", RENDEZVOUS_IP, [7001, 7002], 40000)
        assert "timeout" not in seen, seen
        hosts = {entry.rsplit(":", 1)[0] for entry in seen}
        ports = [int(entry.rsplit(":", 1)[1]) for entry in seen]
        assert hosts == {topology.nat_ips[0]}  # masqueraded behind the NAT's public address
        if kind == "cone":
            assert ports == [40000, 40000]  # the port is kept, whatever the destination
        else:
            assert ports[0] != ports[1]  # a new port for every destination
        # Unsolicited packets from outside do not get in.
        blocked = udp_exchange(
            spaces, "peer-b", "public", topology.nat_ips[1], [7003], 40001, attempts=2,
            timeout_s=0.3,
        )  # fmt: skip
        assert blocked == ["timeout"]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in listed for name in names)
