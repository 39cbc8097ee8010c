"""The comparison for people: an iperf3-like table, and the label of where it was measured."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence

from qotp.compare.runner import CompareResult, Row
from qotp.compare.workloads import Workload

__all__ = ["COLUMNS", "machine_label", "table_cells", "format_table"]

COLUMNS = (
    "transport",
    "workload",
    "impairment",
    "MB/s",
    "req/s",
    "lat p50 ms",
    "lat p99 ms",
    "retrans",
    "CPU s cli",
    "CPU s srv",
    "loss seen",
)


def machine_label() -> str:
    """Date, host, CPU model and core count, and the load when the run ended."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    try:
        load = f", load {os.getloadavg()[0]:.1f}"
    except OSError:
        load = ""
    today = datetime.date.today().isoformat()
    return f"{today}, {platform.node()}: {model}, {os.cpu_count()} cores{load}"


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def table_cells(row: Row) -> list[str]:
    """One row of :data:`COLUMNS` as text."""
    head = [row.transport, row.workload.value, row.impairment.name]
    if row.skipped is not None:
        return [*head, f"skipped: {row.skipped}", *[""] * (len(COLUMNS) - 4)]
    if not row.ok:
        return [*head, f"FAILED: {row.error}", *[""] * (len(COLUMNS) - 4)]
    latency = row.workload in (Workload.CONNECT, Workload.REQUEST_RESPONSE)
    return [
        *head,
        _number(row.mb_s, 1),
        _number(row.requests_per_s, 0),
        _number(row.latency_ms_p50, 2) if latency else "",
        _number(row.latency_ms_p99, 2) if latency else "",
        "" if row.retransmissions is None else str(row.retransmissions),
        _number(row.cpu_s_client, 2),
        _number(row.cpu_s_server, 2),
        "" if row.measured_loss is None else f"{row.measured_loss * 100:.1f}%",
    ]


def format_table(rows: Sequence[Row]) -> str:
    """Plain fixed-width text: measured rows first, then skipped and failed ones."""
    measured = [list(COLUMNS), *(table_cells(row) for row in rows if row.ok)]
    widths = [max(len(line[column]) for line in measured) for column in range(len(COLUMNS))]
    lines = [
        "  ".join(
            cell.ljust(width) if column < 3 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in measured
    ]
    for row in rows:
        if not row.ok:
            cells = table_cells(row)
            head = [cell.ljust(width) for cell, width in zip(cells[:3], widths, strict=False)]
            lines.append("  ".join([*head, cells[3]]))
    return "\n".join(lines)


def header_lines(result: CompareResult) -> list[str]:
    """What a reader needs before the numbers: where, how, and the relay's own ceiling."""
    lines = [f"measured {machine_label()}"]
    if result.path == "netns":
        lines.append(
            "path: client here -> packet relay (TUN, userspace, seeded model; tbf for caps) -> "
            "servers in a network namespace, each in its own process"
        )
    elif result.path == "relay":
        lines.append(
            "path: loopback through relays in their own process (UDP relay for UDP transports, "
            "TCP relay for TCP/TLS), same seeded model; servers in their own processes"
        )
    else:
        lines.append("path: loopback, no relay (no impairment could be applied)")
    if result.ceiling is not None:
        lines.append(result.ceiling.describe())
    lines += [f"note: {note}" for note in result.notes]
    return lines
