"""What every asyncio driver of a qotp sans-IO engine shares: one timer, and close on exit.

A driver (the listener, the rendezvous service, a NAT-traversing peer) feeds
its engine datagrams and ``now``, sends what the engine returns, and keeps a
single event-loop timer at the instant the engine last named with
``get_timer()``.  :class:`DeadlineTimer` is that timer; :class:`ClosesOnExit`
gives ``async with`` to objects whose ``close()`` needs no waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Self

__all__ = ["ClosesOnExit", "DeadlineTimer"]


class ClosesOnExit:
    """``async with`` support for objects whose ``close()`` needs no waiting."""

    def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class DeadlineTimer:
    """One loop timer at an absolute deadline (monotonic ns), moved only when it changes.

    Call :meth:`arm` with ``engine.get_timer()`` after every pass over the
    engine; the callback runs once the deadline is reached (``loop.time()`` is
    ``time.monotonic()`` on every stock loop), after which the timer is unarmed.
    """

    __slots__ = ("_loop", "_callback", "_handle", "_deadline")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._deadline: int | None = None

    def arm(self, deadline: int | None) -> None:
        """Fire at ``deadline`` (ns) instead of the current one; None: not at all."""
        if deadline == self._deadline:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._deadline = deadline
        if deadline is not None:
            self._handle = self._loop.call_at(deadline / 1e9, self._fire)

    def cancel(self) -> None:
        """Unarm."""
        self.arm(None)

    def _fire(self) -> None:
        self._handle = None
        self._deadline = None
        self._callback()
