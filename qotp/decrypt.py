"""Offline decryption of captured packets with key-log secrets (``qotp decrypt``).

The counterpart of the reference's ``DecryptPcap``: given one packet and the
secrets a key log recorded (``QOTP_SHARED_SECRET`` for InitRcv,
InitCryptoRcv and Data; ``QOTP_SHARED_SECRET_ID`` for InitCryptoSnd), say
what is inside.  Pure: bytes in, a JSON-ready dict out; never raises for bad
input, it answers ``{"ok": false, "error": ...}`` instead.
"""

from __future__ import annotations

from typing import Any

from qotp.envelope import MAX_EPOCH, MessageType, PacketCipher, decode_envelope_header, open_packet
from qotp.errors import QotpError
from qotp.payload import Payload, PayloadKind, decode_ack_repeat, decode_payload

__all__ = ["MESSAGE_TYPE_NAMES", "decrypt_packet", "describe_payload", "describe_result"]

MESSAGE_TYPE_NAMES = {
    MessageType.INIT_SND: "InitSnd",
    MessageType.INIT_RCV: "InitRcv",
    MessageType.INIT_CRYPTO_SND: "InitCryptoSnd",
    MessageType.INIT_CRYPTO_RCV: "InitCryptoRcv",
    MessageType.DATA: "Data",
}


def describe_payload(payload: Payload, raw: bytes = b"") -> dict[str, Any]:
    """The decoded payload header as plain JSON types.

    With the payload's bytes (``raw``), an ACK-only payload's ACK repeat (our
    extension, SPEC.md 10.13) is described too, as ``ack_repeat``.
    """
    ack = payload.ack
    described = {
        "kind": payload.kind.value,
        "is_close": payload.is_close,
        "stream_id": payload.stream_id,
        "stream_offset": payload.stream_offset,
        "data_length": len(payload.data),
        "ack": None
        if ack is None
        else {
            "stream_id": ack.stream_id,
            "offset": ack.offset,
            "length": ack.length,
            "receive_window": ack.receive_window,
        },
    }
    if ack is not None and payload.kind is PayloadKind.ACK_ONLY and raw:
        repeat = decode_ack_repeat(raw, ack.offset)
        if repeat is not None:
            described["ack_repeat"] = {
                "stream_id": ack.stream_id,
                "offset": repeat[0],
                "length": repeat[1],
            }
    return described


def _hex_secret(value: str | bytes | None, name: str) -> bytes | None:
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        raw = value
    else:
        text = value.strip()
        if text[:2].lower() == "0x":
            text = text[2:]
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise QotpError(f"{name} is not hex") from None
    if len(raw) != 32:
        raise QotpError(f"{name} must be 32 bytes")
    return raw


def decrypt_packet(
    packet: bytes,
    *,
    secret: str | bytes | None = None,
    secret_id: str | bytes | None = None,
    epoch: int = 0,
    from_initiator: bool = False,
) -> dict[str, Any]:
    """Decode and, where a secret is given, decrypt one packet.

    ``from_initiator`` says whether the dialing side sent the packet; it only
    matters for Data (handshake messages have a fixed direction).
    """
    if not isinstance(epoch, int) or not 0 <= epoch <= MAX_EPOCH:
        return {"ok": False, "error": f"epoch must be an integer from 0 to {MAX_EPOCH}"}
    try:
        header = decode_envelope_header(packet, mtu=0)
        type_name = MESSAGE_TYPE_NAMES[header.message_type]
        result: dict[str, Any] = {
            "ok": True,
            "type": type_name,
            "conn_id": header.connection_id,
        }
        if header.ephemeral_public_key is not None:
            result["ephemeral_public_key"] = header.ephemeral_public_key.hex()
        if header.identity_public_key is not None:
            result["identity_public_key"] = header.identity_public_key.hex()
        if header.message_type is MessageType.INIT_SND:
            # Cleartext; there is no sequence number on the wire.
            result.update(sn=None, epoch=0, header=None, data=None)
            return result
        if header.message_type is MessageType.INIT_CRYPTO_SND:
            key = _hex_secret(secret_id, "secret_id")
            if key is None:
                return {"ok": False, "error": "InitCryptoSnd needs --secret-id"}
        else:
            key = _hex_secret(secret, "secret")
            if key is None:
                return {"ok": False, "error": f"{type_name} needs --secret"}
        opened = open_packet(
            packet, header, PacketCipher(key), epoch=epoch, sent_by_initiator=from_initiator
        )
        payload = decode_payload(opened.payload)
        result.update(
            sn=opened.sequence_number,
            epoch=opened.epoch,
            header=describe_payload(payload, opened.payload),
            data=None if payload.kind.value == "ack_only" else payload.data.hex(),
        )
        return result
    except QotpError as error:
        return {"ok": False, "error": str(error)}


def describe_result(result: dict[str, Any]) -> str:
    """One readable line for a :func:`decrypt_packet` answer."""
    if not result.get("ok"):
        return f"not decrypted: {result.get('error')}"
    parts = [f"{result['type']} conn {result['conn_id']:016x}"]
    if result.get("sn") is not None:
        parts.append(f"sn {result['sn']} epoch {result['epoch']}")
    header = result.get("header")
    if header is None:
        keys = [
            f"{name.split('_')[0]} key {result[name][:16]}..."
            for name in ("ephemeral_public_key", "identity_public_key")
            if result.get(name)
        ]
        return ", ".join(parts + keys)
    if header["kind"] == "data":
        close = " CLOSE" if header["is_close"] else ""
        parts.append(
            f"stream {header['stream_id']} offset {header['stream_offset']} "
            f"{header['data_length']} bytes{close}"
        )
    elif header["kind"] == "ping":
        parts.append(f"stream {header['stream_id']} PING")
    elif header["is_close"]:
        parts.append(f"stream {header['stream_id']} CLOSE")
    ack = header.get("ack")
    if ack is not None:
        parts.append(
            f"ACK stream {ack['stream_id']} offset {ack['offset']} length {ack['length']} "
            f"window {ack['receive_window']}"
        )
    return ", ".join(parts)
