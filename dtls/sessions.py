"""Resumable session state, the server's session-id cache and RFC 5077 tickets.

A ticket is the session state sealed with AES-256-GCM under a key only the
server holds: ``key_name(16) || nonce(12) || ciphertext``.  The server keeps no
per-client state for tickets; the session-id cache is bounded (oldest entries
go first).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import DecodeError
from .handshake import Reader

__all__ = ["SESSION_CACHE_ENTRIES", "Session", "SessionCache", "TicketCipher", "TicketKeys"]

SESSION_CACHE_ENTRIES = 1024
_KEY_NAME_BYTES = 16
_NONCE_BYTES = 12
_SESSION_MAGIC = b"DTLS12-SESSION\x01"


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """What both sides need to resume: give it back to a client connection via ``session=``."""

    session_id: bytes
    cipher_suite: int
    master_secret: bytes
    extended_master_secret: bool
    ticket: bytes = b""
    server_name: str | None = None
    alpn_protocol: str | None = None
    peer_certificates: tuple[bytes, ...] = ()

    def encode(self) -> bytes:
        """Serialise (used inside tickets)."""
        parts = [
            self.cipher_suite.to_bytes(2, "big"),
            bytes((self.extended_master_secret,)),
            bytes((len(self.master_secret),)) + self.master_secret,
        ]
        for text in (self.server_name or "", self.alpn_protocol or ""):
            raw = text.encode()
            parts.append(bytes((len(raw),)) + raw)
        parts.append(len(self.peer_certificates).to_bytes(1, "big"))
        for der in self.peer_certificates:
            parts.append(len(der).to_bytes(3, "big") + der)
        return b"".join(parts)

    def to_bytes(self) -> bytes:
        """Everything, id and ticket included, for a client to keep across processes.

        Holds the master secret: store it like a private key.
        """
        return (
            _SESSION_MAGIC
            + bytes((len(self.session_id),))
            + self.session_id
            + len(self.ticket).to_bytes(2, "big")
            + self.ticket
            + self.encode()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Session:
        """Inverse of :meth:`to_bytes`; raises :class:`DecodeError` for anything else."""
        reader = Reader(data)
        if reader.take(len(_SESSION_MAGIC)) != _SESSION_MAGIC:
            raise DecodeError("not a saved DTLS session")
        session_id = reader.vector(1, maximum=32)
        ticket = reader.vector(2)
        return cls.decode(reader.take(reader.remaining()), session_id, ticket)

    @classmethod
    def decode(cls, data: bytes, session_id: bytes, ticket: bytes) -> Session:
        """Inverse of :meth:`encode`; raises :class:`DecodeError`."""
        reader = Reader(data)
        suite = reader.uint(2)
        ems = bool(reader.uint(1))
        master = reader.vector(1)
        try:
            server_name = reader.vector(1).decode() or None
            alpn = reader.vector(1).decode() or None
        except UnicodeDecodeError:
            raise DecodeError("bad text in session") from None
        count = reader.uint(1)
        certificates = tuple(reader.vector(3) for _ in range(count))
        reader.finish()
        return cls(
            session_id=session_id,
            cipher_suite=suite,
            master_secret=master,
            extended_master_secret=ems,
            ticket=ticket,
            server_name=server_name,
            alpn_protocol=alpn,
            peer_certificates=certificates,
        )


class SessionCache:
    """Bounded server-side map from session id to session."""

    __slots__ = ("_entries", "_limit")

    def __init__(self, limit: int = SESSION_CACHE_ENTRIES) -> None:
        self._entries: OrderedDict[bytes, Session] = OrderedDict()
        self._limit = limit

    def store(self, session: Session) -> None:
        """Remember a session (evicting the oldest over the limit)."""
        if not session.session_id:
            return
        self._entries[session.session_id] = session
        self._entries.move_to_end(session.session_id)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)

    def get(self, session_id: bytes) -> Session | None:
        """Look up a session id."""
        return self._entries.get(session_id)

    def __len__(self) -> int:
        return len(self._entries)


class TicketCipher:
    """Seals bytes into a ticket only this server can open: ``key_name(16) || nonce(12) ||
    AES-256-GCM(data)`` (the key name is the additional data).  DTLS 1.2 and 1.3 tickets
    both use it."""

    __slots__ = ("_aead", "_key_name")

    def __init__(self, key: bytes | None = None) -> None:
        self._key_name = os.urandom(_KEY_NAME_BYTES)
        self._aead = AESGCM(key if key is not None else AESGCM.generate_key(256))

    def seal(self, data: bytes) -> bytes:
        """Ticket bytes for ``data``."""
        nonce = os.urandom(_NONCE_BYTES)
        return self._key_name + nonce + self._aead.encrypt(nonce, data, self._key_name)

    def open(self, ticket: bytes) -> bytes | None:
        """The data in a ticket we sealed, or None (not ours, damaged, or garbage)."""
        if len(ticket) < _KEY_NAME_BYTES + _NONCE_BYTES + 16:
            return None
        if ticket[:_KEY_NAME_BYTES] != self._key_name:
            return None
        nonce = ticket[_KEY_NAME_BYTES : _KEY_NAME_BYTES + _NONCE_BYTES]
        try:
            return self._aead.decrypt(
                nonce, ticket[_KEY_NAME_BYTES + _NONCE_BYTES :], self._key_name
            )
        except InvalidTag:
            return None


class TicketKeys:
    """Seals and opens DTLS 1.2 session tickets (RFC 5077)."""

    __slots__ = ("_cipher",)

    def __init__(self, key: bytes | None = None) -> None:
        self._cipher = TicketCipher(key)

    def seal(self, session: Session) -> bytes:
        """Ticket bytes for a session."""
        return self._cipher.seal(session.encode())

    def open(self, ticket: bytes, session_id: bytes) -> Session | None:
        """The session in a ticket, or None when it is not ours or is damaged."""
        plain = self._cipher.open(ticket)
        if plain is None:
            return None
        try:
            return Session.decode(plain, session_id, ticket)
        except DecodeError:
            return None
