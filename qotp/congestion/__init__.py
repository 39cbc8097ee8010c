"""Congestion control for QOTP: RTT/RTO estimation, BBR, NewReno and pacing (sans-IO).

A connection owns one :class:`RttEstimator` and one controller implementing
:class:`CongestionController` (:class:`Bbr` by default).  See :mod:`qotp.congestion.base`
for the calling contract and :mod:`qotp.congestion.rtt` / :mod:`qotp.congestion.bbr` for the
facts carried over from the Go reference.
"""

from __future__ import annotations

from qotp.congestion.base import CongestionController, DeliveryRateSampler, SendSample
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
    "INITIAL_RTO_NS",
    "MAX_RETRANSMISSIONS",
    "MAX_RTO_NS",
    "MAX_TRANSMISSIONS",
    "MIN_RTO_NS",
    "MIN_RTT_WINDOW_NS",
    "Bbr",
    "BbrState",
    "CongestionController",
    "DeliveryRateSampler",
    "NewReno",
    "Pacer",
    "RttEstimator",
    "SendSample",
    "retry_limit_exceeded",
]
