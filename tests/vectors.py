"""Loading the Go reference's test vectors (tests/vectors/qotp-v0.2.19.json)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from qotp.payload import Ack, Payload, PayloadKind

VECTORS_PATH = Path(__file__).parent / "vectors" / "qotp-v0.2.19.json"


@cache
def load() -> dict[str, Any]:
    """The whole vectors file (integers above 2^53 stay exact with json)."""
    with VECTORS_PATH.open() as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def ack_from(fields: dict[str, Any] | None) -> Ack | None:
    if fields is None:
        return None
    return Ack(fields["streamId"], fields["offset"], fields["len"], fields["rcvWnd"])


def payload_from_input(fields: dict[str, Any]) -> Payload:
    """Map the reference's (isClose, ack, userData nil/empty) onto our PayloadKind."""
    ack = ack_from(fields["ack"])
    user_data = fields["userData"]
    if user_data is None and ack is not None and not fields["isClose"]:
        return Payload(PayloadKind.ACK_ONLY, fields["streamId"], fields["streamOffset"], b"", ack)
    data = bytes.fromhex(user_data or "")
    kind = PayloadKind.DATA if data or fields["isClose"] else PayloadKind.PING
    return Payload(kind, fields["streamId"], fields["streamOffset"], data, ack, fields["isClose"])


def payload_from_decoded(fields: dict[str, Any]) -> Payload:
    """The Payload our decoder must return for a vector's ``decoded`` block."""
    ack = ack_from(fields["ack"])
    if fields.get("userDataIsNil", fields["userData"] is None):
        return Payload(PayloadKind.ACK_ONLY, 0, 0, b"", ack, fields["isClose"])
    data = bytes.fromhex(fields["userData"])
    kind = PayloadKind.DATA if data or fields["isClose"] else PayloadKind.PING
    return Payload(kind, fields["streamId"], fields["streamOffset"], data, ack, fields["isClose"])
