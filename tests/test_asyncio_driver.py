"""The pieces every asyncio driver shares: the one deadline timer, close on exit."""

from __future__ import annotations

import asyncio
import time

from qotp.asyncio.driver import ClosesOnExit, DeadlineTimer


def test_timer_fires_once_at_the_last_deadline_given() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        fired: list[int] = []
        timer = DeadlineTimer(loop, lambda: fired.append(time.monotonic_ns()))
        soon = time.monotonic_ns() + 1_000_000
        timer.arm(soon + 10_000_000_000)  # far away: moved below, never fires there
        timer.arm(soon)
        timer.arm(soon)  # the same deadline again: still one timer
        await asyncio.sleep(0.05)
        assert len(fired) == 1 and fired[0] >= soon - 2_000_000  # loop timer granularity
        # Fired means unarmed: arming the same instant again schedules it anew.
        timer.arm(soon)
        await asyncio.sleep(0.01)
        return fired

    assert len(asyncio.run(main())) == 2


def test_cancelled_or_none_deadline_never_fires() -> None:
    async def main() -> list[None]:
        loop = asyncio.get_running_loop()
        fired: list[None] = []
        timer = DeadlineTimer(loop, lambda: fired.append(None))
        timer.arm(time.monotonic_ns())
        timer.cancel()
        other = DeadlineTimer(loop, lambda: fired.append(None))
        other.arm(time.monotonic_ns())
        other.arm(None)
        await asyncio.sleep(0.02)
        return fired

    assert asyncio.run(main()) == []


def test_closes_on_exit_calls_close() -> None:
    class Thing(ClosesOnExit):
        closed = 0

        def close(self) -> None:
            self.closed += 1

    async def main() -> Thing:
        async with Thing() as thing:
            assert thing.closed == 0
        return thing

    assert asyncio.run(main()).closed == 1
