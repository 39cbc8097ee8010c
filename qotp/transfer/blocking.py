"""Blocking file work from the event loop: in a worker thread, never abandoned half-done."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["run_blocking"]

P = ParamSpec("P")
T = TypeVar("T")


async def run_blocking(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``function`` in the default executor.

    If the caller is cancelled, it still waits for the thread to finish before
    the cancellation goes on: a write must not land in a file after its new
    owner (a resumed transfer) has taken it over.
    """
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, lambda: function(*args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait({future})
        raise
