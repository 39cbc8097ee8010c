"""Tests of qotp.path: replies move to a new address only once it proved it reaches the peer."""

from __future__ import annotations

from netsim import MS, SECOND, LinkConditions, Network
from transfer import Transfer

from qotp.endpoint import QotpEndpoint
from qotp.events import PeerAddressChanged
from qotp.path import (
    MAX_PATH_CANDIDATES,
    MAX_PATH_PROBES,
    PATH_AMPLIFICATION_FACTOR,
    PATH_PROBE_STREAM_ID,
    PathValidator,
)

OLD = ("10.0.0.1", 1000)
NEW = ("10.9.9.9", 5555)
ATTACKER = ("192.0.2.66", 6666)
RTO = 200 * MS


def test_a_candidate_moves_replies_only_when_its_challenge_comes_back_from_it() -> None:
    path = PathValidator(OLD)
    path.on_authenticated_packet(NEW, 1000)
    assert path.address == OLD and path.probe_pending
    ((address, challenge),) = path.due_probes(0, RTO, 50)
    assert address == NEW and challenge >= 1 << 40
    # The right challenge from the wrong address, a wrong challenge, a data ACK: nothing.
    assert not path.on_ack(PATH_PROBE_STREAM_ID, challenge, 0, OLD)
    assert not path.on_ack(PATH_PROBE_STREAM_ID, challenge + 1, 0, NEW)
    assert not path.on_ack(PATH_PROBE_STREAM_ID, challenge, 10, NEW)
    assert path.address == OLD
    assert path.on_ack(PATH_PROBE_STREAM_ID, challenge, 0, NEW)
    assert path.address == NEW and not path.has_candidates and path.moves == 1


def test_probes_stay_within_three_times_the_bytes_received() -> None:
    path = PathValidator(OLD)
    path.on_authenticated_packet(ATTACKER, 40)  # one small packet: budget 120 bytes
    sent = 0
    now = 0
    for _ in range(10):
        sent += 50 * len(path.due_probes(now, RTO, 50))
        deadline = path.next_deadline()
        if deadline is None:
            break
        now = deadline
    assert sent <= PATH_AMPLIFICATION_FACTOR * 40
    assert path.refused_probes > 0 and not path.has_candidates  # given up
    assert path.address == OLD


def test_an_unanswered_candidate_is_probed_a_few_times_backing_off_then_dropped() -> None:
    path = PathValidator(OLD)
    path.on_authenticated_packet(NEW, 10_000)
    times = []
    now = 0
    while (deadline := path.next_deadline()) is not None:
        now = max(now, deadline)
        if path.due_probes(now, RTO, 50):
            times.append(now // MS)
    assert times == [0, 200, 600, 1400][:MAX_PATH_PROBES]
    assert path.address == OLD


def test_candidates_are_bounded_oldest_evicted() -> None:
    path = PathValidator(OLD)
    for port in range(MAX_PATH_CANDIDATES + 3):
        path.on_authenticated_packet(("198.51.100.1", port), 100)
    probes = path.due_probes(0, RTO, 50)
    assert len(probes) == MAX_PATH_CANDIDATES
    assert {address[1] for address, _ in probes} == set(range(3, MAX_PATH_CANDIDATES + 3))


def run(network: Network, transfer: Transfer, limit_s: int = 120) -> None:
    network.run_until(transfer.done, on_step=transfer.step, limit_ns=limit_s * SECOND)
    transfer.verify()


def test_roaming_mid_transfer_completes_and_moves_replies_once() -> None:
    """The client's address is replaced mid-transfer; the old one reaches no one."""
    client, server = QotpEndpoint(), QotpEndpoint()
    conditions = LinkConditions(delay_ns=10 * MS, bandwidth_bytes_per_s=20_000_000)
    network = Network(client, server, a_to_b=conditions, seed=3)
    transfer = Transfer(client, server, network.b_address, 2, 2_000_000)
    network.run_until(
        lambda: sum(len(data) for data in transfer.received.values()) > 1_000_000,
        on_step=transfer.step,
        limit_ns=60 * SECOND,
    )
    network.a_address = NEW
    run(network, transfer)
    moves = [e for e in transfer.events["server"] if isinstance(e, PeerAddressChanged)]
    assert [(e.old_address, e.new_address) for e in moves] == [(OLD, NEW)]
    server_connection = transfer.server_connection
    assert server_connection is not None and server_connection.address == NEW


def test_a_live_packet_copied_from_another_address_ahead_of_the_original_moves_nothing() -> None:
    """An on-path attacker races copies of the client's packets from its own address.

    The copies arrive first, so they are the authentic ones and the originals the
    replays; the data flows on, but the replies stay with the client and the
    attacker gets only small probes, within three times what it sent.
    """
    client, server = QotpEndpoint(), QotpEndpoint()
    network = Network(client, server, a_to_b=LinkConditions(delay_ns=10 * MS), seed=5)
    sent_to_attacker = 0
    copied = 0
    count = 0

    def tap(sender: str, datagram: bytes, destination: tuple[str, int]) -> None:
        nonlocal sent_to_attacker, copied, count
        if sender == "b" and destination == ATTACKER:
            sent_to_attacker += len(datagram)
        if sender == "a" and datagram[0] == 0x80:
            count += 1
            if count % 7 == 0:  # every seventh Data packet, 5 ms ahead of the original
                copied += len(datagram)
                network.inject("a", datagram, source=ATTACKER, delay_ns=5 * MS)

    network.tap = tap
    transfer = Transfer(client, server, network.b_address, 2, 1_000_000)
    run(network, transfer)
    server_connection = transfer.server_connection
    assert server_connection is not None and server_connection.address == OLD
    assert not any(isinstance(e, PeerAddressChanged) for e in transfer.events["server"])
    assert server_connection.replayed_datagrams > 0  # the originals, arriving second
    assert 0 < sent_to_attacker <= PATH_AMPLIFICATION_FACTOR * copied


def test_a_repeated_init_snd_from_elsewhere_changes_nothing() -> None:
    """InitSnd is cleartext: anyone can repeat it, from anywhere, once the connection runs."""
    client, server = QotpEndpoint(), QotpEndpoint()
    network = Network(client, server, a_to_b=LinkConditions(delay_ns=5 * MS), seed=2)
    init_snds: list[bytes] = []
    network.tap = lambda sender, datagram, _to: (
        init_snds.append(datagram) if datagram[0] == 0 else None
    )
    transfer = Transfer(client, server, network.b_address, 1, 100_000)
    run(network, transfer)
    (init_snd,) = init_snds
    server_connection = transfer.server_connection
    assert server_connection is not None
    for port in range(5):
        server.receive_datagram(init_snd, (ATTACKER[0], port), network.now)
    assert server.drops["late first packet"] == 5
    assert server_connection.address == OLD and not server_connection.path.has_candidates
    assert not [d for d, _a in server.datagrams_to_send(network.now)]
