"""Tests of qotp.config: defaults and validation of QotpConfiguration."""

from __future__ import annotations

import dataclasses

import pytest

from qotp.config import QotpConfiguration


def test_defaults_bound_streams_and_tombstones() -> None:
    config = QotpConfiguration()
    assert config.max_streams == 1024
    assert config.max_stream_tombstones == 65_536
    assert config.idle_timeout_ns == 30_000_000_000
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_streams = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "changes",
    [
        {"max_streams": 0},
        {"max_stream_tombstones": 0},
        {"mtu": 100},
        {"receive_buffer_bytes": 0},
        {"idle_timeout_ns": 0},
        {"congestion_control": "cubic"},
    ],
)
def test_invalid_values_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        QotpConfiguration(**changes)  # type: ignore[arg-type]


def test_congestion_control_by_class() -> None:
    """A controller class is a factory; it makes each connection's controller."""
    from qotp.congestion import NewReno, RttEstimator
    from qotp.connection import Connection
    from qotp.keys import KeyPair
    from qotp.native import NativeCryptoLayer

    made: list[int] = []

    class CountingNewReno(NewReno):
        def __init__(self, rtt: RttEstimator, *, max_datagram_bytes: int) -> None:
            made.append(max_datagram_bytes)
            super().__init__(rtt, max_datagram_bytes=max_datagram_bytes)

    config = QotpConfiguration(congestion_control=CountingNewReno, mtu=1200)
    protection = NativeCryptoLayer(KeyPair.generate(), mtu=1200).dial(
        ("192.0.2.1", 1), now=0, peer_identity=None
    )
    connection = Connection(
        protection=protection, address=("192.0.2.1", 1), is_initiator=True, now=0,
        configuration=config,
    )  # fmt: skip
    assert isinstance(connection.congestion, CountingNewReno) and made == [1200]
    with pytest.raises(ValueError, match="name or a controller class"):
        QotpConfiguration(congestion_control=5)  # type: ignore[arg-type]
