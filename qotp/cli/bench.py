"""``qotp bench compare``: QOTP, QOTP over DTLS, TCP, TLS, QUIC and the Go reference, side by side.

A thin layer over :func:`qotp.compare.runner.run_comparison`: parse the
selection, run it, print the table (rich when installed), ``--json`` or a
chart.  A transport that cannot run here (aioquic missing, the Go peer not
built) becomes skipped rows and a note; the rest still runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from qotp.cli.common import CliError, Command, Output, Parser, run_async

__all__ = ["COMMAND"]


def _list(parse: Any) -> Any:
    def parse_item(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse_item


def _transport(text: str) -> str:
    from qotp.compare.runner import TRANSPORTS

    if text not in TRANSPORTS:
        raise ValueError(f"unknown transport {text!r} (known: {', '.join(TRANSPORTS)})")
    return text


def _workload(text: str) -> Any:
    from qotp.compare.workloads import Workload

    try:
        return Workload(text)
    except ValueError:
        known = ", ".join(workload.value for workload in Workload)
        raise ValueError(f"unknown workload {text!r} (known: {known})") from None


def _impairment(text: str) -> Any:
    from qotp.compare.runner import parse_impairment

    return parse_impairment(text)


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _configure_compare(parser: argparse.ArgumentParser) -> None:
    from qotp.compare.runner import IMPAIRMENTS, QUICK_IMPAIRMENTS, TRANSPORTS

    parser.add_argument(
        "--transports",
        nargs="+",
        type=_list(_transport),
        metavar="NAME",
        help=f"transports to compare (default: all of {' '.join(TRANSPORTS)})",
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        type=_list(_workload),
        metavar="NAME",
        help="bulk (1 stream), bulk10 (10 streams, or 10 connections for TCP/TLS), connect "
        "(new connection + 1 KB request, p50/p99), rr (small requests on one connection) "
        "(default: all)",
    )
    parser.add_argument(
        "--impairments",
        nargs="+",
        type=_list(_impairment),
        metavar="SPEC",
        help=f"presets ({' '.join(IMPAIRMENTS)}) or loss=2%%,rtt=20,jitter=1,reorder=1%%,"
        f"rate=20 (ms, Mbit/s) (default: {' '.join(QUICK_IMPAIRMENTS)}; "
        "without --quick all presets)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: the whole default matrix in minutes"
    )
    parser.add_argument(
        "--bytes", type=_positive, help="bulk bytes per row (default 20 MB, quick 3 MB)"
    )
    parser.add_argument(
        "--connects", type=_positive, help="connections of `connect` (40, quick 12)"
    )
    parser.add_argument("--requests", type=_positive, help="requests of `rr` (1000, quick 200)")
    parser.add_argument(
        "--go-bytes", type=_positive, help="bulk bytes of the Go rows (2 MB, quick 300 kB)"
    )
    parser.add_argument("--chart", type=Path, metavar="FILE.png", help="also draw a chart")
    parser.add_argument(
        "--go-peer",
        metavar="PATH",
        help="the Go interop peer binary (default: the test suite's build cache)",
    )
    parser.add_argument(
        "--path",
        choices=("auto", "netns", "relay", "direct"),
        default="auto",
        help="netns: servers in a network namespace behind the packet relay (root; tbf caps); "
        "relay: UDP and TCP relays on loopback (TCP rows cannot lose packets there); direct: "
        "loopback without relay (no impairment); auto: netns where possible, else relay",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the impairment model")
    parser.add_argument("--json", action="store_true", help='one JSON object {"rows": [...]}')
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="count", default=0, help="more detail")
    loudness.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _configure(parser: argparse.ArgumentParser) -> None:
    subcommands = parser.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    compare = subcommands.add_parser(
        "compare",
        help="compare transports under impairment",
        description=COMPARE_DESCRIPTION,
        formatter_class=parser.formatter_class,
    )
    assert isinstance(compare, Parser) or isinstance(compare, argparse.ArgumentParser)
    _configure_compare(compare)


COMPARE_DESCRIPTION = """\
Runs every selected transport through the same impaired path, with the same
workloads, every byte checked by SHA-256, and prints a table (MB/s, latency,
retransmissions, CPU seconds of each side, the loss the relay really applied).

The path: servers run in their own processes inside a network namespace; every
packet between them and this process passes a userspace packet relay (TUN
devices) with a seeded loss/delay/jitter/reordering model, and tbf for
bandwidth caps. That needs root; without it (--path relay) UDP transports go
through a UDP relay and TCP/TLS through a TCP relay on loopback, with the same
model, except that a TCP relay cannot lose packets: those rows are skipped.
The relay's own ceiling is measured and printed.
"""


def _run(arguments: argparse.Namespace, output: Output) -> int:
    from qotp.compare.chart import matplotlib_missing, write_chart
    from qotp.compare.report import header_lines, machine_label
    from qotp.compare.runner import (
        IMPAIRMENTS,
        QUICK_IMPAIRMENTS,
        TRANSPORTS,
        CompareConfig,
        CompareResult,
        Row,
        run_comparison,
    )
    from qotp.compare.workloads import Workload, WorkloadSizes

    chart_missing = matplotlib_missing() if arguments.chart is not None else None
    if chart_missing is not None:
        output.note(f"qotp bench compare: no chart: {chart_missing}; the comparison runs anyway")
    if arguments.chart is not None:
        if arguments.chart.suffix.lower() != ".png":
            raise CliError(f"--chart {arguments.chart}: the chart is a PNG; name it FILE.png")
        if not arguments.chart.parent.is_dir():
            raise CliError(f"--chart {arguments.chart}: no directory {arguments.chart.parent}")
    sizes = WorkloadSizes.quick() if arguments.quick else WorkloadSizes()
    sizes = WorkloadSizes(
        bulk_bytes=arguments.bytes or sizes.bulk_bytes,
        connects=arguments.connects or sizes.connects,
        requests=arguments.requests or sizes.requests,
        go_bulk_bytes=arguments.go_bytes or sizes.go_bulk_bytes,
    )
    default_impairments = QUICK_IMPAIRMENTS if arguments.quick else tuple(IMPAIRMENTS)
    config = CompareConfig(
        transports=tuple(dict.fromkeys(arguments.transports or TRANSPORTS)),
        workloads=tuple(dict.fromkeys(arguments.workloads or Workload)),
        impairments=tuple(
            arguments.impairments or (IMPAIRMENTS[name] for name in default_impairments)
        ),
        sizes=sizes,
        seed=arguments.seed,
        go_peer=arguments.go_peer,
        path=arguments.path,
    )
    done: list[Row] = []

    def progress(row: Row) -> None:
        done.append(row)
        if output.json or output.quiet:
            return
        if row.skipped is not None:
            status = f"skipped ({row.skipped})"
        elif not row.ok:
            status = f"FAILED: {row.error}"
        elif row.mb_s is not None:
            status = f"{row.mb_s:.1f} MB/s"
        else:
            status = f"p50 {row.latency_ms_p50:.2f} ms"
        output.note(f"  {row.transport} {row.workload.value} {row.impairment.name}: {status}")

    async def main() -> CompareResult:
        return await run_comparison(config, progress)

    try:
        result = run_async(
            main,
            interrupted=lambda: f"interrupted after {len(done)} rows",
            report=lambda: {"rows": [row.as_json() for row in done]},
        )
    except (RuntimeError, OSError) as error:
        raise CliError(f"the comparison could not run: {error}") from None
    if arguments.chart is not None and chart_missing is None:
        write_chart(result.rows, arguments.chart, title=f"qotp bench compare, {machine_label()}")
    failed = [row for row in result.rows if not row.ok and row.skipped is None]
    if output.json:
        report = result.as_json()
        report["machine"] = machine_label()
        report["ok"] = not failed
        output.result(report)
    else:
        for line in header_lines(result):
            output.line(line)
        output.line("")
        _print_table(result.rows, output)
        if arguments.chart is not None and chart_missing is None:
            output.note(f"chart: {arguments.chart}")
    if failed:
        raise CliError(f"{len(failed)} of {len(result.rows)} rows failed", exit_status=1)
    return 0


def _print_table(rows: Any, output: Output) -> None:
    from qotp.compare.report import COLUMNS, format_table, table_cells

    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        output.line(format_table(rows))
        return
    table = Table(show_edge=False, pad_edge=False)
    for index, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if index < 3 else "right", no_wrap=index < 3)
    for row in rows:
        if row.ok:
            table.add_row(*table_cells(row))
    Console(file=output.stdout, width=max(160, Console().width)).print(table)
    for row in rows:
        if not row.ok:
            cells = table_cells(row)
            output.line(f"{cells[0]} {cells[1]} {cells[2]}: {cells[3]}")


COMMAND = Command(
    name="bench",
    help="benchmarks: `qotp bench compare` compares transports under impairment",
    description="Benchmarks people run. compare: QOTP, QOTP over DTLS, TCP, TLS, QUIC and "
    "the Go reference under loss, delay, reordering and bandwidth caps.",
    configure=_configure,
    run=_run,
)
