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
