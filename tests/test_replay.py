"""Tests of qotp.replay: the per-connection sliding window over sequence numbers."""

from __future__ import annotations

import random

from enginepair import SERVER_ADDRESS, EnginePair
from hypothesis import given, settings
from hypothesis import strategies as st

from qotp.replay import REPLAY_WINDOW_PACKETS, ReplayWindow, packet_number


def test_in_order_numbers_are_new_once() -> None:
    window = ReplayWindow()
    assert all(window.accept(number) for number in range(100))
    assert not any(window.accept(number) for number in range(100))
    assert window.highest == 99


def test_late_packets_within_the_window_are_accepted_once() -> None:
    window = ReplayWindow()
    assert window.accept(0) and window.accept(5)
    assert window.accept(3) and not window.accept(3)
    assert window.accept(1) and window.accept(2) and window.accept(4)
    assert not window.accept(5) and not window.accept(0)


def test_packets_older_than_the_window_are_refused() -> None:
    window = ReplayWindow()
    window.accept(0)
    far = 2 + 3 * REPLAY_WINDOW_PACKETS
    assert window.accept(far)
    assert not window.accept(1)  # skipped, but far behind: refused
    assert not window.accept(far - REPLAY_WINDOW_PACKETS - 1)
    assert window.accept(far - REPLAY_WINDOW_PACKETS)
    assert window.accept(far - 1)


def test_the_epoch_continues_the_numbering() -> None:
    window = ReplayWindow()
    last_of_epoch = packet_number((1 << 48) - 1, 0)
    assert window.accept(last_of_epoch)
    assert window.accept(packet_number(0, 1))  # the next number, in order
    assert not window.accept(packet_number(0, 1))
    assert not window.accept(packet_number(5, 0))  # far behind now


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3 * REPLAY_WINDOW_PACKETS), max_size=300))
def test_never_accepts_a_number_twice_and_never_refuses_a_fresh_recent_one(
    numbers: list[int],
) -> None:
    window = ReplayWindow()
    accepted: set[int] = set()
    for number in numbers:
        fresh_and_recent = (
            number not in accepted
            and number > max(accepted, default=-1) - REPLAY_WINDOW_PACKETS - 1
        )
        result = window.accept(number)
        assert not (result and number in accepted)
        if fresh_and_recent:
            assert result
        if result:
            accepted.add(number)


def test_memory_stays_bounded_under_steady_loss() -> None:
    window = ReplayWindow()
    rng = random.Random(3)
    number = 0
    for _ in range(100_000):
        number += 1 + (rng.random() < 0.3)  # every third number is never seen
        window.accept(number)
    assert len(window._missing) <= 2 * REPLAY_WINDOW_PACKETS


def test_a_replayed_data_packet_is_dropped_and_counted_not_delivered() -> None:
    pair = EnginePair()
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    pair.run_until(lambda: client.is_established and bool(pair.server.connections))
    server = pair.server.connections[client.connection_id]
    client.send_stream_data(1, b"pay once", now=pair.now)
    pair.client.mark_ready(client)
    (datagram,) = pair.client.datagrams_to_send(pair.now)
    pair.server.receive_datagram(datagram[0], pair.client_address, pair.now)
    assert server.read(1, now=pair.now) == b"pay once"
    pending = server.receive_buffer.pending_acks
    for _ in range(3):
        pair.server.receive_datagram(datagram[0], pair.client_address, pair.now)
    assert server.replayed_datagrams == 3 and pair.server.drops["replayed"] == 3
    assert server.readable(1) == 0
    assert server.receive_buffer.pending_acks == pending  # not even acknowledged again
