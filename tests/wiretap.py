"""What crosses a simulated link, decrypted with the endpoints' key log.

The netsim ``tap`` and ``on_deliver`` hooks see sealed datagrams; a
:class:`KeyLogDecryptor` fed by an endpoint's ``key_log`` callback opens them as
``qotp decrypt`` would (:mod:`qotp.capture`'s key-log format), so a test can
reason about what the wire carried (stream, offset, length, the ACK riding
along) without reaching into the engine.
"""

from __future__ import annotations

from qotp.capture import KeyLog
from qotp.envelope import MessageType, PacketCipher, decode_envelope_header, open_packet
from qotp.errors import DecodeError, DecryptError
from qotp.payload import Payload, decode_payload


class KeyLogDecryptor:
    """Opens the datagrams of connections whose secrets a key log gave it."""

    def __init__(self) -> None:
        self.key_log = KeyLog()
        self._ciphers: dict[bytes, PacketCipher] = {}

    def add_line(self, line: str) -> None:
        """Pass as an endpoint's ``key_log`` callback."""
        parsed = KeyLog.parse(line)
        self.key_log.shared_secrets.update(parsed.shared_secrets)
        self.key_log.shared_secret_ids.update(parsed.shared_secret_ids)

    def payload(self, datagram: bytes, *, from_initiator: bool) -> Payload | None:
        """The transport payload, or None (InitSnd, no key yet, or not authentic)."""
        try:
            header = decode_envelope_header(datagram, mtu=0)
        except DecodeError:
            return None
        message_type = header.message_type
        if message_type is MessageType.INIT_SND:
            return None
        secrets = (
            self.key_log.shared_secret_ids
            if message_type is MessageType.INIT_CRYPTO_SND
            else self.key_log.shared_secrets
        )
        key = secrets.get(header.connection_id)
        if key is None:
            return None
        cipher = self._ciphers.get(key)
        if cipher is None:
            cipher = self._ciphers[key] = PacketCipher(key)
        try:
            opened = open_packet(datagram, header, cipher, sent_by_initiator=from_initiator)
            return decode_payload(opened.payload)
        except (DecodeError, DecryptError):
            return None
