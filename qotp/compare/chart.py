"""The comparison as a picture (matplotlib, optional: the ``[bench]`` extra).

Two panels over the same impairments: bulk goodput per transport, and the
latency of a new connection with a 1 KB request (p50 bar, p99 whisker).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from qotp.compare.runner import Row
from qotp.compare.workloads import Workload

__all__ = ["matplotlib_missing", "write_chart"]


def matplotlib_missing() -> str | None:
    """Why no chart can be drawn here, or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib is not installed (pip install 'qotp[bench]')"
    return None


def write_chart(rows: Sequence[Row], path: Path, *, title: str) -> None:
    """Draw the rows into a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    transports = list(dict.fromkeys(row.transport for row in rows))
    impairments = list(dict.fromkeys(row.impairment.name for row in rows))
    panels = [
        (Workload.BULK, "bulk, 1 stream: goodput (MB/s)"),
        (Workload.CONNECT, "new connection + 1 KB request: latency (ms, log; p50 bar, p99 line)"),
    ]
    figure, axes = pyplot.subplots(len(panels), 1, figsize=(11, 8), squeeze=False)
    for (workload, label), axis in zip(panels, axes[:, 0], strict=True):
        shown = [
            transport
            for transport in transports
            if any(
                row.ok and row.workload is workload and row.transport == transport for row in rows
            )
        ]
        width = 0.8 / max(1, len(shown))
        for index, transport in enumerate(shown):
            values: list[float] = []
            upper: list[float] = []
            for impairment in impairments:
                row = next(
                    (
                        row
                        for row in rows
                        if row.transport == transport
                        and row.impairment.name == impairment
                        and row.workload is workload
                        and row.ok
                    ),
                    None,
                )
                if row is None:
                    values.append(0.0)
                    upper.append(0.0)
                elif workload is Workload.BULK:
                    values.append(row.mb_s or 0.0)
                    upper.append(0.0)
                else:
                    values.append(row.latency_ms_p50 or 0.0)
                    upper.append(
                        max(0.0, (row.latency_ms_p99 or 0.0) - (row.latency_ms_p50 or 0.0))
                    )
            positions = [
                position + (index - (len(transports) - 1) / 2) * width
                for position in range(len(impairments))
            ]
            errors = [[0.0] * len(upper), upper] if workload is Workload.CONNECT else None
            color = f"C{transports.index(transport)}"
            axis.bar(positions, values, width, label=transport, yerr=errors, capsize=2, color=color)
        if workload is Workload.CONNECT:
            axis.set_yscale("log")  # p99 under loss is a retransmission timer, p50 an RTT
        axis.set_xticks(range(len(impairments)))
        axis.set_xticklabels(impairments)
        axis.set_title(label, fontsize=10)
        axis.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(ncol=min(6, len(transports)), fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
