"""Messages over a QOTP stream: read and write whole frames, with the limits enforced."""

from __future__ import annotations

import asyncio
from typing import TypeVar, overload

from qotp.asyncio import QotpStream
from qotp.transfer.messages import (
    FRAME_HEADER,
    Message,
    TransferProtocolError,
    decode_message,
    encode_message,
    frame_length,
)

__all__ = ["expect_message", "read_message", "write_message"]

M = TypeVar("M")
N = TypeVar("N")


async def read_message(stream: QotpStream) -> Message | None:
    """The next message, or None if the stream ended cleanly before one started.

    Raises :class:`TransferProtocolError` for a truncated or malformed frame.
    """
    try:
        header = await stream.readexactly(FRAME_HEADER.size)
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            return None
        raise TransferProtocolError("the stream ended inside a frame header") from None
    length = frame_length(header)
    try:
        body = await stream.readexactly(length)
    except asyncio.IncompleteReadError:
        raise TransferProtocolError("the stream ended inside a message") from None
    return decode_message(body)


@overload
async def expect_message(stream: QotpStream, kind: type[M], /) -> M: ...
@overload
async def expect_message(stream: QotpStream, kind: type[M], other: type[N], /) -> M | N: ...
async def expect_message(stream: QotpStream, *kinds: type[object]) -> object:
    """The next message, which must be one of ``kinds``."""
    message = await read_message(stream)
    if message is None:
        raise TransferProtocolError("the peer ended the stream early")
    if not isinstance(message, kinds):
        names = " or ".join(kind.__name__ for kind in kinds)
        raise TransferProtocolError(f"expected {names}, got {type(message).__name__}")
    return message


def write_message(stream: QotpStream, message: Message) -> None:
    """Queue one message on the stream (``await stream.drain()`` for back-pressure)."""
    stream.write(encode_message(message))
