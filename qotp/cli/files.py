"""What the file commands share: progress per file and in total, file lines, the summary.

On a terminal (stderr), rich draws a total bar and one bar per file in
flight, each with rate and ETA; elsewhere, plain lines: one per finished
file and a total line every few seconds.  ``--json`` prints no progress,
only result objects.  rich is imported here, in the CLI, never by the
library.
"""

from __future__ import annotations

import time
from typing import Any

from qotp.cli.common import Output, format_bytes, format_seconds
from qotp.transfer import (
    FileDone,
    FileProgress,
    FileStarted,
    SessionDone,
    SessionStarted,
    TransferEvent,
    TransferSummary,
)

__all__ = ["FileProgressDisplay", "file_record", "summary_record"]

PLAIN_INTERVAL_S = 5.0


def file_record(done: FileDone, *, direction: str, peer: str | None = None) -> dict[str, Any]:
    """The ``{"event": "file", ...}`` object for one finished file."""
    record: dict[str, Any] = {
        "event": "file",
        "name": done.path,
        "bytes": done.size,
        "sha256": done.sha256.hex() if done.sha256 is not None else None,
        "ok": done.ok,
        "direction": direction,
        "bytes_sent": done.bytes_sent,
        "bytes_skipped": done.bytes_skipped,
    }
    if peer is not None:
        record["peer"] = peer
    if done.error is not None:
        record["error"] = done.error
    return record


def summary_record(summary: TransferSummary) -> dict[str, Any]:
    """The one JSON summary of ``send-files``."""
    record: dict[str, Any] = {
        "ok": summary.ok,
        "files": summary.files,
        "bytes_sent": summary.bytes_sent,
        "bytes_skipped": summary.bytes_skipped,
        "elapsed_s": round(summary.elapsed_s, 3),
        "mb_s": round(summary.mb_s, 3),
    }
    if summary.files_failed:
        record["files_failed"] = summary.files_failed
        record["errors"] = list(summary.errors[:20])
    return record


class FileProgressDisplay:
    """A transfer observer that shows progress per file and in total (``verb``: sent/received)."""

    def __init__(
        self,
        output: Output,
        *,
        verb: str,
        total_bytes: int = 0,
        file_lines: bool = True,
        failure_lines: bool = True,
    ) -> None:
        self.output = output
        self.verb = verb
        self.file_lines = file_lines
        """Print a line per finished file (off where the caller prints its own)."""
        self.failure_lines = failure_lines
        """Print a line per failed file (off where the caller's summary names the failures)."""
        self.total_bytes = total_bytes
        self.done_bytes = 0
        """Bytes through so far (sent or skipped), over all files."""
        self.files_ok = 0
        self.files_failed = 0
        self._positions: dict[str, int] = {}
        self._started = time.monotonic()
        self._last_line = self._started
        self._rich: Any = None
        self._total_task: Any = None
        self._file_tasks: dict[str, Any] = {}
        if not output.json and not output.quiet and output.stderr.isatty():
            self._start_rich()

    def _start_rich(self) -> None:
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
        except ImportError:  # the [cli] extra is missing: plain lines
            return
        self._rich = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=self.output.stderr),
            transient=True,
        )
        self._rich.start()
        self._total_task = self._rich.add_task("total", total=self.total_bytes or None)

    def close(self) -> None:
        """Remove the bars so that result lines stand alone."""
        if self._rich is not None:
            self._rich.stop()
            self._rich = None

    def __call__(self, event: TransferEvent) -> None:
        if isinstance(event, SessionStarted):
            self.total_bytes += event.total_bytes
            if self._rich is not None:
                self._rich.update(self._total_task, total=self.total_bytes)
        elif isinstance(event, FileStarted):
            self._positions[event.path] = event.offset
            self.done_bytes += event.offset
            if self._rich is not None:
                self._file_tasks[event.path] = self._rich.add_task(
                    _short(event.path), total=event.size, completed=event.offset
                )
        elif isinstance(event, FileProgress):
            previous = self._positions.get(event.path, 0)
            self._positions[event.path] = event.position
            self.done_bytes += event.position - previous
            if self._rich is not None and event.path in self._file_tasks:
                self._rich.update(self._file_tasks[event.path], completed=event.position)
        elif isinstance(event, FileDone):
            self._file_done(event)
        elif isinstance(event, SessionDone):
            return
        self._tick()

    def _file_done(self, event: FileDone) -> None:
        previous = self._positions.pop(event.path, None)
        if previous is None:
            self.done_bytes += event.size  # skipped whole, or failed before it started
        else:
            self.done_bytes += event.size - previous
        if event.ok:
            self.files_ok += 1
        else:
            self.files_failed += 1
        task = self._file_tasks.pop(event.path, None)
        if task is not None and self._rich is not None:
            self._rich.remove_task(task)
        if self.output.json or not self.file_lines or not (event.ok or self.failure_lines):
            return
        if event.ok:
            how = f"{format_bytes(event.size)}"
            if event.bytes_skipped:
                how += f", {format_bytes(event.bytes_skipped)} already there"
            text = f"{self.verb} {event.path} ({how})"
            if self.output.verbosity > 0 and event.sha256 is not None:
                text += f" sha256={event.sha256.hex()}"
        else:
            text = f"FAILED {event.path}: {event.error}"
        if self._rich is not None:
            self._rich.console.print(text, markup=False, highlight=False)
        elif not self.output.quiet or not event.ok:
            print(text, file=self.output.stderr, flush=True)

    def _tick(self) -> None:
        if self._rich is not None:
            self._rich.update(self._total_task, completed=self.done_bytes)
            return
        if self.output.json or self.output.quiet:
            return
        now = time.monotonic()
        if now - self._last_line < PLAIN_INTERVAL_S:
            return
        self._last_line = now
        elapsed = now - self._started
        rate = self.done_bytes / elapsed if elapsed > 0 else 0.0
        line = f"{self.verb} {format_bytes(self.done_bytes)}"
        if self.total_bytes:
            line += f" of {format_bytes(self.total_bytes)}"
        if rate > 0:
            line += f", {format_bytes(int(rate))}/s"
            if self.total_bytes > self.done_bytes:
                line += (
                    f", about {format_seconds((self.total_bytes - self.done_bytes) / rate)} left"
                )
        print(line, file=self.output.stderr, flush=True)


def _short(path: str, limit: int = 40) -> str:
    return path if len(path) <= limit else "..." + path[-(limit - 3) :]
