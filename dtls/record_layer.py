"""The record layer of one connection: epochs, replay windows, seal and open.

Theory of operation
-------------------
Each *read* epoch has its protection (None for the plaintext epoch 0) and its
own anti-replay window; each *write* epoch has its protection and its next
sequence number.  Keys for a new epoch arrive from the handshake: read keys
are installed at once (:meth:`RecordLayer.install_read`), write keys are
prepared (:meth:`prepare_write`) and switched to when the handshake says so
(:meth:`activate_write`: at our ChangeCipherSpec in DTLS 1.2, at the key
change in 1.3).

Receiving is two steps, so that nothing a record claims can move the replay
window before the connection decided to keep the record:

1. :meth:`open` finds the epoch, checks freshness, authenticates and decrypts.
   A record of the next epoch, which we have no keys for yet (the peer's
   Finished overtaking its ChangeCipherSpec), is parked, a few at most, and
   handed back by :meth:`take_parked` once that epoch is readable.
2. :meth:`accept` marks the record's number as seen.  The connection calls it
   at once for authenticated records, and for plaintext (epoch 0) records only
   once the handshake used them: a spoofed epoch-0 record must not burn the
   record number of a genuine one (RFC 6347 4.1.2.6 marks only records that
   were processed).

Several records may share a datagram (:meth:`split`); a sealed flight packs
as many as fit the MTU into each datagram (see ``flights.py``).

What DTLS 1.3 plugs in (RFC 9147): a datagram decoder that also reads the
unified header (``decoder``), and per-epoch protection objects that decrypt
the record number (:meth:`EpochProtection.recover_sequence_number`) before
the replay check.  Everything else -- epochs, windows, parking, accept after
use, overhead for packing -- is shared.

Sans-IO: no sockets, no clock.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Literal, Protocol

from .errors import DecryptError, LocalProtocolError
from .protection import RecordProtection
from .protection13 import Epoch13Protection
from .records import (
    DTLS_1_0,
    DTLS_1_2,
    MAX_SEQUENCE_NUMBER,
    RECORD_HEADER_BYTES,
    REPLAY_WINDOW_SIZE,
    ContentType,
    Record,
    ReplayWindow,
    decode_datagram,
    encode_record_header,
)
from .records13 import UnifiedRecord, reconstruct_sequence_number

__all__ = [
    "MAX_PARKED_RECORDS",
    "EpochProtection",
    "OpenedRecord",
    "RecordLayer",
]

Address = Hashable
MAX_PARKED_RECORDS = 16
_RECORD_HEADER = struct.Struct("!BHHHIH")  # type, version, epoch, seq_hi16, seq_lo32, length

DatagramDecoder = Callable[[bytes, int], tuple[list[Record], int]]


class EpochProtection(Protocol):
    """The keys of one epoch in one direction, as the record layer uses them.

    :class:`~dtls.protection.RecordProtection` is the DTLS 1.2 implementation.
    """

    epoch: int

    @property
    def overhead(self) -> int:
        """Bytes a sealed record's payload grows by (explicit nonce, tag, inner type...)."""
        ...

    def recover_sequence_number(self, record: Record, highest: int) -> int:
        """The record's full sequence number (1.3: decrypted and reconstructed).

        ``highest`` is the highest number accepted in this epoch so far (-1 before any).
        Raises only :class:`DecryptError`.
        """
        ...

    def seal(
        self,
        content_type: int,
        version: int,
        sequence_number: int,
        plaintext: bytes,
        connection_id: bytes = b"",
    ) -> bytes:
        """A complete protected record, header included."""
        ...

    def open(self, record: Record) -> tuple[int, bytes]:
        """(real content type, plaintext); raises only :class:`DecryptError`."""
        ...


@dataclass(slots=True)
class OpenedRecord:
    """A record that passed :meth:`RecordLayer.open`: fresh, authentic (if protected)."""

    content_type: int
    payload: bytes
    epoch: int
    sequence_number: int
    protected: bool


class RecordLayer:
    """Epochs, replay windows and record protection of one connection."""

    __slots__ = (
        "_fast_read",
        "_fast_read13",
        "_fast_write",
        "_parked",
        "_pending_write",
        "_read",
        "_replay",
        "_replay_window_records",
        "_send_sequence",
        "_write",
        "current_sequence_number",
        "decoder",
        "decrypt_failures",
        "dropped_records",
        "local_connection_id",
        "peer_connection_id",
        "plaintext_version",
        "protected_version",
        "resolve_unified_epoch",
        "write_epoch",
    )

    def __init__(
        self,
        *,
        plaintext_version: int = DTLS_1_2,
        replay_window_records: int = REPLAY_WINDOW_SIZE,
        local_connection_id: bytes = b"",
    ) -> None:
        self._read: dict[int, EpochProtection | None] = {0: None}
        self._replay: dict[int, ReplayWindow] = {0: ReplayWindow()}
        self._write: dict[int, EpochProtection | None] = {0: None}
        self._send_sequence: dict[int, int] = {0: 0}
        # The DTLS 1.2 protections again, for the one-record application-data fast paths.
        self._fast_read: dict[int, RecordProtection] = {}
        # DTLS 1.3: epoch bits -> (epoch, protection) of the newest readable epoch with them.
        self._fast_read13: dict[int, tuple[int, Epoch13Protection]] = {}
        self._fast_write: dict[int, RecordProtection] = {}
        self._pending_write: EpochProtection | None = None
        self._parked: list[tuple[Record, Address]] = []
        self._replay_window_records = replay_window_records
        self.write_epoch = 0
        # Version field of plaintext records (a client's first hello says DTLS 1.0).
        self.plaintext_version = plaintext_version
        self.protected_version = DTLS_1_2
        self.local_connection_id = local_connection_id
        self.peer_connection_id = b""
        self.decoder: DatagramDecoder = decode_datagram
        # DTLS 1.3: (epoch bits, readable epochs) -> epoch, run when a record is opened, so
        # keys installed by an earlier record of the same datagram already count.
        self.resolve_unified_epoch: Callable[[int, list[int]], int] | None = None
        self.dropped_records = 0
        self.decrypt_failures = 0  # records that did not authenticate (also in dropped_records)
        # Number of the record opened last (a server continues the client's epoch-0 numbering).
        self.current_sequence_number = 0

    # ------------------------------------------------------------------ keys

    def install_read(self, protection: EpochProtection) -> None:
        """Readable from now on: records of ``protection.epoch`` (and parked ones)."""
        epoch = protection.epoch
        self._read[epoch] = protection
        self._replay[epoch] = ReplayWindow(self._replay_window_records)
        if isinstance(protection, RecordProtection):
            self._fast_read[epoch] = protection
        elif isinstance(protection, Epoch13Protection):
            known = self._fast_read13.get(epoch & 3)
            if known is None or known[0] < epoch:
                self._fast_read13[epoch & 3] = (epoch, protection)

    def prepare_write(self, protection: EpochProtection) -> None:
        """Keys to switch to at the next :meth:`activate_write`."""
        self._pending_write = protection

    def activate_write(self) -> None:
        """Seal with the prepared keys from now on (a new write epoch, numbered from 0)."""
        protection = self._pending_write
        if protection is None:
            raise LocalProtocolError("no write keys prepared")
        self._pending_write = None
        epoch = protection.epoch
        self._write[epoch] = protection
        self._send_sequence[epoch] = 0
        self.write_epoch = epoch
        if isinstance(protection, RecordProtection):
            self._fast_write[epoch] = protection

    def retire_read(self, epoch: int) -> None:
        """Forget the read keys of ``epoch`` (early data after the handshake, old epochs)."""
        if epoch:
            self._read.pop(epoch, None)
            self._replay.pop(epoch, None)
            known = self._fast_read13.get(epoch & 3)
            if known is not None and known[0] == epoch:
                del self._fast_read13[epoch & 3]

    def retire_read_below(self, epoch: int) -> None:
        """Forget the read keys of every protected epoch older than ``epoch``."""
        for old in [e for e in self._read if 0 < e < epoch]:
            self.retire_read(old)

    def write_protection(self) -> EpochProtection | None:
        """The protection of the current write epoch (None in epoch 0)."""
        return self._write.get(self.write_epoch)

    # ------------------------------------------------------------------ receiving

    def split(self, data: bytes) -> tuple[list[Record], int]:
        """The records of one datagram and the count of trailing bytes that did not parse."""
        return self.decoder(data, len(self.local_connection_id))

    def open(self, record: Record, addr: Address) -> OpenedRecord | None:
        """Check and decrypt one record; None when it was dropped (counted) or parked.

        Does not mark the record as seen: call :meth:`accept` once it is kept.
        """
        if isinstance(record, UnifiedRecord):
            resolve = self.resolve_unified_epoch
            if resolve is None:
                self.dropped_records += 1
                return None
            record.epoch = resolve(record.epoch_bits, list(self._read))
        epoch = record.epoch
        if epoch not in self._read:
            # The next epoch, or (1.3, whose epochs may jump from 0 to 2) the next one with
            # those epoch bits: a record that overtook the message that brings its keys.
            ahead = 3 if isinstance(record, UnifiedRecord) else 1
            newest = max(self._read)
            if newest < epoch <= newest + ahead and len(self._parked) < MAX_PARKED_RECORDS:
                self._parked.append((record, addr))
            else:
                self.dropped_records += 1
            return None
        window = self._replay[epoch]
        protection = self._read[epoch]
        if protection is None:
            if record.content_type == ContentType.tls12_cid:
                self.dropped_records += 1
                return None
            if not window.is_fresh(record.sequence_number):
                self.dropped_records += 1
                return None
            self.current_sequence_number = record.sequence_number
            return OpenedRecord(
                record.content_type, record.payload, epoch, record.sequence_number, False
            )
        try:
            sequence_number = protection.recover_sequence_number(record, window.highest)
            if not window.is_fresh(sequence_number):
                self.dropped_records += 1
                return None
            record.sequence_number = sequence_number
            content_type, payload = protection.open(record)
        except DecryptError:
            self.dropped_records += 1
            self.decrypt_failures += 1
            return None
        self.current_sequence_number = sequence_number
        return OpenedRecord(content_type, payload, epoch, sequence_number, True)

    def accept(self, opened: OpenedRecord) -> bool:
        """Mark the record as seen; True when it is the newest of its epoch so far."""
        window = self._replay[opened.epoch]
        window.mark(opened.sequence_number)
        return window.highest == opened.sequence_number

    def has_parked(self) -> bool:
        """Whether parked records wait for an epoch that is readable now."""
        if not self._parked:
            return False
        first = self._parked[0][0]
        if isinstance(first, UnifiedRecord) and self.resolve_unified_epoch is not None:
            return self.resolve_unified_epoch(first.epoch_bits, list(self._read)) in self._read
        return first.epoch in self._read

    def take_parked(self) -> list[tuple[Record, Address]]:
        """Parked records, to be handled again now that their epoch may be readable."""
        parked, self._parked = self._parked, []
        return parked

    @property
    def parked_count(self) -> int:
        """Records waiting for the next epoch's keys (at most ``MAX_PARKED_RECORDS``)."""
        return len(self._parked)

    def restart_read_window(self, epoch: int) -> None:
        """Forget the record numbers seen in ``epoch`` (a stateless peer restarted them)."""
        self._replay[epoch] = ReplayWindow(
            self._replay_window_records if epoch else REPLAY_WINDOW_SIZE
        )

    def open_application_fast(self, data: bytes) -> bytes | None | Literal[False]:
        """One DTLS 1.2 application-data record filling the datagram: the bulk case.

        Returns the plaintext, None when the record was dropped (counted), or
        False when the datagram needs the general path.  The caller checked the
        content type and that no connection id is in use.
        """
        _, version, epoch, sequence_hi, sequence_lo, length = _RECORD_HEADER.unpack_from(data)
        if length != len(data) - RECORD_HEADER_BYTES or version >> 8 != 0xFE:
            return False
        protection = self._fast_read.get(epoch)
        if protection is None:
            return False
        sequence_number = (sequence_hi << 32) | sequence_lo
        window = self._replay[epoch]
        if not window.is_fresh(sequence_number):
            self.dropped_records += 1
            return None
        try:
            plaintext = protection.open_plain(
                ContentType.application_data,
                version,
                epoch,
                sequence_number,
                data[RECORD_HEADER_BYTES:],
            )
        except DecryptError:
            self.dropped_records += 1
            self.decrypt_failures += 1
            return None
        window.mark(sequence_number)
        return plaintext

    def open_unified_fast(self, data: bytes) -> OpenedRecord | None | Literal[False]:
        """One DTLS 1.3 record filling the datagram, in its usual shape: the bulk case.

        The shape is a unified header with a 16-bit sequence number and a length
        (and our connection id when we have one).  Returns the opened record
        (authentic and fresh, already marked as seen), None when it was dropped
        (counted), or False when the datagram needs the general path.
        """
        cid_length = len(self.local_connection_id)
        flags = data[0]
        if flags & 0b1111_1100 != (0b0011_1100 if cid_length else 0b0010_1100):
            return False
        header_length = 5 + cid_length
        if len(data) < header_length + 16:
            return False
        length = (data[header_length - 2] << 8) | data[header_length - 1]
        if length != len(data) - header_length:
            return False
        known = self._fast_read13.get(flags & 3)
        if known is None:
            return False
        epoch, epoch_protection = known
        protection = epoch_protection.protection
        window = self._replay[epoch]
        low, aad = protection.unmask_whole(data, 1 + cid_length, header_length)
        sequence_number = reconstruct_sequence_number(low, 16, window.highest + 1)
        if not window.is_fresh(sequence_number):
            self.dropped_records += 1
            return None
        try:
            content_type, content = protection.open(aad, sequence_number, data[header_length:])
        except DecryptError:
            self.dropped_records += 1
            self.decrypt_failures += 1
            return None
        self.current_sequence_number = sequence_number
        return OpenedRecord(content_type, content, epoch, sequence_number, True)

    # ------------------------------------------------------------------ sending

    def next_sequence_number(self, epoch: int) -> int:
        """The number the next record sealed in ``epoch`` will carry."""
        return self._send_sequence[epoch]

    def continue_numbering(self, epoch: int, at_least: int) -> None:
        """Let our numbering in ``epoch`` continue from ``at_least`` (never go back)."""
        self._send_sequence[epoch] = max(self._send_sequence[epoch], at_least)

    def _take_sequence_number(self, epoch: int) -> int:
        sequence_number = self._send_sequence[epoch]
        if sequence_number > MAX_SEQUENCE_NUMBER:
            raise LocalProtocolError("sequence numbers of this epoch are used up")
        self._send_sequence[epoch] = sequence_number + 1
        return sequence_number

    def seal(self, content_type: int, epoch: int, payload: bytes) -> bytes:
        """One record of ``epoch`` around ``payload`` (plaintext in epoch 0)."""
        sequence_number = self._take_sequence_number(epoch)
        protection = self._write[epoch]
        if protection is None:
            return (
                encode_record_header(
                    content_type, self.plaintext_version, epoch, sequence_number, len(payload)
                )
                + payload
            )
        return protection.seal(
            content_type,
            self.protected_version,
            sequence_number,
            payload,
            self.peer_connection_id,
        )

    def seal_application(self, data: bytes) -> bytes:
        """One application-data record in the current write epoch (fast when it can be)."""
        epoch = self.write_epoch
        fast = self._fast_write.get(epoch)
        if fast is None or self.peer_connection_id:
            return self.seal(ContentType.application_data, epoch, data)
        return fast.seal_plain(
            ContentType.application_data, self._take_sequence_number(epoch), data
        )

    def overhead(self, epoch: int | None = None) -> int:
        """Bytes one record of ``epoch`` (default: the write epoch) adds to its payload."""
        protection = self._write.get(self.write_epoch if epoch is None else epoch)
        if protection is None:
            return RECORD_HEADER_BYTES
        record_bytes = getattr(protection, "record_bytes", None)
        if record_bytes is not None:  # DTLS 1.3: the unified header is smaller than 13 bytes
            return int(record_bytes(len(self.peer_connection_id)))
        extra = len(self.peer_connection_id) + 1 if self.peer_connection_id else 0
        return RECORD_HEADER_BYTES + protection.overhead + extra


def initial_plaintext_version(is_client: bool) -> int:
    """RFC 6347 4.1 / RFC 9147 5.1: a client's first records say DTLS 1.0 (0xFEFF)."""
    return DTLS_1_0 if is_client else DTLS_1_2
