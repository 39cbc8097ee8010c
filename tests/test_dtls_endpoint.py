"""One endpoint, many peers, one (simulated) socket."""

from __future__ import annotations

import dataclasses
import random

from dtls_helpers import SECOND_NS, configs, lossy
from netsim import Address, LinkConditions, Network

from dtls.config import DTLSConfiguration, ServerCertificates
from dtls.connection import DTLSConnection
from dtls.cookie import CookieGenerator
from dtls.endpoint import DTLSEndpoint, HelloCheck, check_client_hello, starts_with_initial_hello
from dtls.errors import AlertDescription
from dtls.events import ConnectionAccepted, ConnectionTerminated, HandshakeFailed

SERVER = ("192.0.2.1", 4433)


class ManyClients:
    """An endpoint at SERVER and client connections around it, on the simulated network."""

    def __init__(
        self, endpoint: DTLSEndpoint, link: LinkConditions | None = None, *, seed: int = 1
    ) -> None:
        self.endpoint = endpoint
        self.link = link or LinkConditions()
        self.network = Network(seed=seed)
        self.network.add("server", endpoint, SERVER, self.link)

    @property
    def now(self) -> int:
        return self.network.now

    def add_client(self, address: Address, config: DTLSConfiguration) -> DTLSConnection:
        client = DTLSConnection(config, address=SERVER)
        self.adopt(address, client)
        client.start_handshake(self.now)
        return client

    def adopt(self, address: Address, client: DTLSConnection) -> None:
        """Put a client connection at ``address`` (one already there is replaced)."""
        self.network.add(f"client {address}", client, address, self.link)

    def set_link(self, link: LinkConditions) -> None:
        self.link = link
        for node in self.network.nodes.values():
            node.conditions = link

    def run(self, until_ns: int = 90 * SECOND_NS) -> None:
        self.network.run_until_quiet(limit_ns=until_ns)


def _events(endpoint: DTLSEndpoint) -> list[object]:
    out = []
    while (event := endpoint.next_event()) is not None:
        out.append(event)
    return out


def test_failed_server_handshakes_are_reported_with_the_peer_address() -> None:
    """HandshakeFailed: who failed and why, after the connection is gone (server logs);
    a peer that completed its handshake and closed later is no failure."""
    client_config, server_config, _ = configs()
    endpoint = DTLSEndpoint(server_config)
    network = ManyClients(endpoint)
    good = network.add_client(("10.1.0.1", 1000), client_config)
    untrusting = dataclasses.replace(client_config, ca_certificates=None)
    network.add_client(("10.1.0.2", 2000), untrusting)
    network.run()
    assert good.is_established
    good.close()
    network.run()
    (failed,) = [e for e in _events(endpoint) if isinstance(e, HandshakeFailed)]
    assert failed.address == ("10.1.0.2", 2000)
    assert failed.alert is AlertDescription.bad_certificate and failed.alert_received
    assert endpoint.failed_handshakes == 1


def test_many_peers_on_one_endpoint_over_lossy_link() -> None:
    client_config, server_config, _ = configs()
    endpoint = DTLSEndpoint(server_config)
    network = ManyClients(endpoint, lossy(loss=0.15, reorder=0.2, duplicate=0.05), seed=7)
    clients = [network.add_client(("10.1.0.1", 1000 + i), client_config) for i in range(12)]
    network.run()
    assert all(c.is_established for c in clients)
    accepted = []
    while (connection := endpoint.accept()) is not None:
        accepted.append(connection)
    assert len(accepted) == 12
    assert sum(isinstance(e, ConnectionAccepted) for e in _events(endpoint)) == 12
    # Each peer's data lands in its own connection.
    for index, client in enumerate(clients):
        client.send(f"peer {index}".encode())
    network.set_link(LinkConditions())
    network.run()
    by_address = {c.address: c.receive() for c in accepted}
    for index in range(12):
        assert by_address[("10.1.0.1", 1000 + index)] == f"peer {index}".encode()


def test_no_state_before_cookie() -> None:
    client_config, server_config, _ = configs()
    endpoint = DTLSEndpoint(server_config)
    for index in range(200):
        client = DTLSConnection(client_config, address=SERVER)
        client.start_handshake(0)
        ((hello, _),) = client.datagrams_to_send(0)
        endpoint.receive_datagram(hello, ("198.51.100.7", index), 0)
    assert endpoint.connections == {}
    assert endpoint.hello_verify_requests_sent == 200
    assert endpoint.get_timer() is None
    replies = endpoint.datagrams_to_send(0)
    assert len(replies) == 200
    assert all(len(datagram) < 100 for datagram, _ in replies)  # no amplification


def test_sni_certificate_added_at_run_time() -> None:
    client_config, server_config, pki = configs()
    store = ServerCertificates()
    store.add(server_config.certificate_chain, server_config.private_key)  # type: ignore[arg-type]
    endpoint = DTLSEndpoint(
        dataclasses.replace(
            server_config, certificate_chain=(), private_key=None, server_certificates=store
        )
    )
    chain, key = pki.issue("late.test", "rsa")
    endpoint.add_certificate(chain, key, "late.test")
    network = ManyClients(endpoint)
    late = network.add_client(
        ("10.2.0.1", 1), dataclasses.replace(client_config, server_name="late.test")
    )
    default = network.add_client(("10.2.0.2", 1), client_config)
    network.run()
    assert late.is_established and default.is_established
    assert late.peer_certificates == chain
    assert default.peer_certificates == server_config.certificate_chain


def test_connection_id_routes_after_address_change() -> None:
    client_config, server_config, _ = configs(connection_id=b"")
    endpoint = DTLSEndpoint(server_config, connection_id_bytes=6)
    network = ManyClients(endpoint)
    client = network.add_client(("10.3.0.1", 1), client_config)
    network.run()
    assert client.is_established and len(client.peer_connection_id) == 6
    server_side = endpoint.accept()
    assert server_side is not None
    client.send(b"after NAT rebinding")
    ((datagram, _),) = client.datagrams_to_send(network.now)
    endpoint.receive_datagram(datagram, ("10.3.0.99", 7), network.now)
    assert server_side.receive() == b"after NAT rebinding"
    server_side.send(b"reply")
    endpoint.collect(server_side)
    ((_, destination),) = endpoint.datagrams_to_send(network.now)
    assert destination == ("10.3.0.99", 7)


def test_garbage_from_one_peer_does_not_disturb_others() -> None:
    client_config, server_config, _ = configs()
    endpoint = DTLSEndpoint(server_config)
    network = ManyClients(endpoint)
    good = network.add_client(("10.4.0.1", 1), client_config)
    network.run()
    rng = random.Random(5)
    for _ in range(500):
        size = rng.randrange(0, 300)
        junk = bytes(rng.randrange(256) for _ in range(size))
        if rng.random() < 0.5 and size > 13:
            junk = b"\x16\xfe\xfd" + junk[3:]  # looks like a handshake record
        endpoint.receive_datagram(junk, ("10.4.0.1", 1), network.now)  # the good peer's address
        endpoint.receive_datagram(junk, ("10.4.0.66", 66), network.now)
    assert endpoint.internal_errors == 0
    assert good.is_established
    good.send(b"still here")
    network.run()
    server_side = endpoint.accept()
    assert server_side is not None and server_side.receive() == b"still here"


def test_client_restart_on_same_address_replaces_connection() -> None:
    client_config, server_config, _ = configs()
    endpoint = DTLSEndpoint(server_config)
    network = ManyClients(endpoint)
    network.add_client(("10.5.0.1", 1), client_config)
    network.run()
    first = endpoint.accept()
    restarted = network.add_client(("10.5.0.1", 1), client_config)
    network.run()
    assert restarted.is_established
    second = endpoint.accept()
    assert first is not None and second is not None and first is not second
    assert len(endpoint.connections) == 1


def test_handshake_that_never_finishes_is_reclaimed() -> None:
    client_config, server_config, _ = configs()
    endpoint = DTLSEndpoint(dataclasses.replace(server_config, handshake_timeout_ns=10 * SECOND_NS))
    client = DTLSConnection(client_config, address=SERVER)
    client.start_handshake(0)
    # Deliver the client's first two flights (hello, hello + cookie), then go silent.
    for _ in range(2):
        for datagram, _ in client.datagrams_to_send(0):
            endpoint.receive_datagram(datagram, ("10.6.0.1", 1), 0)
        for datagram, _ in endpoint.datagrams_to_send(0):
            client.receive_datagram(datagram, SERVER, 0)
    assert len(endpoint.connections) == 1
    while (timer := endpoint.get_timer()) is not None:
        endpoint.handle_timer(timer)
    assert endpoint.connections == {}
    assert any(isinstance(e, ConnectionTerminated) for e in _events(endpoint))


def test_idle_established_peers_are_reclaimed() -> None:
    client_config, server_config, _ = configs()
    endpoint = DTLSEndpoint(dataclasses.replace(server_config, idle_timeout_ns=30 * SECOND_NS))
    network = ManyClients(endpoint)
    network.add_client(("10.7.0.1", 1), client_config)
    network.run(until_ns=10 * SECOND_NS)
    connection = endpoint.accept()
    assert connection is not None and connection.is_established
    deadline = endpoint.get_timer()
    assert deadline is not None and deadline - network.now <= 30 * SECOND_NS
    endpoint.handle_timer(deadline)
    assert endpoint.connections == {}
    assert connection.terminated_reason == "idle timeout"


def test_check_client_hello_outcomes() -> None:
    client_config, _, _ = configs()
    cookies = CookieGenerator()
    client = DTLSConnection(client_config, address=SERVER)
    client.start_handshake(0)
    ((hello, _),) = client.datagrams_to_send(0)
    assert starts_with_initial_hello(hello)
    first = check_client_hello(hello, ("198.51.100.7", 1), 0, cookies)
    assert first.hello is None and first.reply is not None
    client.receive_datagram(first.reply, SERVER, 0)
    ((hello_with_cookie, _),) = client.datagrams_to_send(0)
    second = check_client_hello(hello_with_cookie, ("198.51.100.7", 1), 0, cookies)
    assert second.reply is None and second.hello is not None
    assert second.hello.random == client.client_random
    # The cookie is bound to the address; a stale random is dropped; garbage too.
    assert check_client_hello(hello_with_cookie, ("198.51.100.8", 1), 0, cookies).reply
    stale = check_client_hello(
        hello_with_cookie, ("198.51.100.7", 1), 0, cookies, stale_random=client.client_random
    )
    assert stale == HelloCheck()
    assert check_client_hello(b"\x16garbage", ("198.51.100.7", 1), 0, cookies) == HelloCheck()
    unchecked = check_client_hello(hello, ("198.51.100.7", 1), 0, cookies, cookie_exchange=False)
    assert unchecked.hello is not None
    assert not starts_with_initial_hello(b"\x17" + hello[1:])


def test_reordered_extensions_in_the_second_hello_still_match_the_cookie() -> None:
    # Issue 9: wolfSSL with -v d reorders its extensions in the second ClientHello; the
    # cookie used to bind the whole hello, so it got a second HelloVerifyRequest and gave up.
    client_config, server_config, _ = configs(alpn_protocols=("x",))
    endpoint = DTLSEndpoint(dataclasses.replace(server_config, alpn_protocols=("x",)))
    network = ManyClients(endpoint)
    client = network.add_client(("10.9.0.1", 1), client_config)
    machine = client._handshake
    assert machine._hello is not None
    machine._hello = dataclasses.replace(
        machine._hello,
        extensions=list(reversed(machine._hello.extensions)),
        cipher_suites=list(reversed(machine._hello.cipher_suites)),
    )
    network.run()
    assert client.is_established
    assert endpoint.hello_verify_requests_sent == 1


def test_fragmented_first_hello_is_answered_without_state() -> None:
    # Issue 9: gnutls-cli --mtu 150 fragments its first ClientHello; we used to ignore it.
    alpn = tuple(f"protocol-{index:02d}-" + "x" * 20 for index in range(12))
    client_config, server_config, _ = configs(alpn_protocols=alpn, mtu=256)
    endpoint = DTLSEndpoint(dataclasses.replace(server_config, alpn_protocols=alpn[-1:]))
    client = DTLSConnection(client_config, address=SERVER)
    client.start_handshake(0)
    first_flight = [datagram for datagram, _ in client.datagrams_to_send(0)]
    assert len(first_flight) >= 2  # the hello did not fit one datagram
    address = ("10.9.0.2", 2)
    # Later fragments alone, from anywhere: dropped, nothing kept.
    for datagram in first_flight[1:]:
        endpoint.receive_datagram(datagram, ("10.9.0.3", 3), 0)
    assert endpoint.datagrams_to_send(0) == [] and endpoint.connections == {}
    # The first fragment earns a HelloVerifyRequest, still without state.
    for datagram in first_flight:
        endpoint.receive_datagram(datagram, address, 0)
    (reply,) = endpoint.datagrams_to_send(0)
    assert endpoint.connections == {} and endpoint.hello_verify_requests_sent == 1
    network = ManyClients(endpoint)
    network.adopt(address, client)
    client.receive_datagram(reply[0], SERVER, 0)
    network.run()
    assert client.is_established and client.alpn_protocol == alpn[-1]
    assert endpoint.hello_verify_requests_sent == 1 and len(endpoint.connections) == 1
