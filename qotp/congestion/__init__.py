"""Congestion control for QOTP: RTT/RTO estimation, BBR, NewReno and pacing (sans-IO).

A connection owns one :class:`RttEstimator` and one controller implementing
:class:`CongestionController` (:class:`Bbr` by default).  See :mod:`qotp.congestion.base`
for the calling contract and :mod:`qotp.congestion.rtt` / :mod:`qotp.congestion.bbr` for the
facts carried over from the Go reference.

``QotpConfiguration.congestion_control`` takes a name from :data:`CONGESTION_CONTROLLERS`
or a :class:`CongestionControllerFactory`: any class (or function) called as
``factory(rtt, max_datagram_bytes=...)`` that returns a :class:`CongestionController`,
e.g. a subclass of :class:`NewReno` or a controller of your own.
"""

from __future__ import annotations

from collections.abc import Mapping

from qotp.congestion.base import (
    CongestionController,
    CongestionControllerFactory,
    DeliveryRateSampler,
    SendSample,
)
from qotp.congestion.bbr import Bbr, BbrState
from qotp.congestion.newreno import NewReno
from qotp.congestion.pacing import Pacer
from qotp.congestion.rtt import (
    INITIAL_RTO_NS,
    MAX_RETRANSMISSIONS,
    MAX_RTO_NS,
    MAX_TRANSMISSIONS,
    MIN_RTO_NS,
    MIN_RTT_WINDOW_NS,
    RttEstimator,
    retry_limit_exceeded,
)

__all__ = [
    "CONGESTION_CONTROLLERS",
    "INITIAL_RTO_NS",
    "MAX_RETRANSMISSIONS",
    "MAX_RTO_NS",
    "MAX_TRANSMISSIONS",
    "MIN_RTO_NS",
    "MIN_RTT_WINDOW_NS",
    "Bbr",
    "BbrState",
    "CongestionController",
    "CongestionControllerFactory",
    "DeliveryRateSampler",
    "NewReno",
    "Pacer",
    "RttEstimator",
    "SendSample",
    "make_congestion_controller",
    "retry_limit_exceeded",
]

CONGESTION_CONTROLLERS: Mapping[str, CongestionControllerFactory] = {
    "bbr": Bbr,
    "newreno": NewReno,
}
"""The controllers ``QotpConfiguration.congestion_control`` knows by name."""


def make_congestion_controller(
    choice: str | CongestionControllerFactory, rtt: RttEstimator, *, max_datagram_bytes: int
) -> CongestionController:
    """The controller for one connection: by name, or from the factory given."""
    factory = CONGESTION_CONTROLLERS[choice] if isinstance(choice, str) else choice
    return factory(rtt, max_datagram_bytes=max_datagram_bytes)
