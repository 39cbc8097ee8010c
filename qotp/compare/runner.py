"""Run a comparison: every selected transport, workload and impairment, one row each.

Layout of a run (see :mod:`qotp.compare.namespaces`): the client side of every
transport runs in this process; each transport's server runs in a process of
its own, inside the servers' namespace; every packet between them passes the
packet relay, which applies the row's impairment.  Each row reports what the
relay measured (the loss it actually applied), the CPU seconds each side spent
(this process for the client, ``/proc`` for the server) and the sender's
retransmissions where the transport can tell.

Without namespaces (not root, no TUN), rows run directly over loopback and
only the ``none`` impairment can be measured: impaired rows come back as
skipped, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qotp.compare.certificates import Credentials, make_credentials
from qotp.compare.goref import find_go_peer
from qotp.compare.impairment import Impairment
from qotp.compare.namespaces import (
    LineReader,
    NamespacePath,
    RelayCeiling,
    namespaces_missing,
    process_cpu_seconds,
)
from qotp.compare.packet_relay import impairment_to_json
from qotp.compare.relay_process import RelayProcess
from qotp.compare.tcp_relay import stream_relay_limitation
from qotp.compare.transports import PYTHON_TRANSPORTS, client_transport, transport_missing
from qotp.compare.transports.base import (
    Address,
    ClientSession,
    ClientTransport,
    TransportSettings,
    TransportUnavailable,
)
from qotp.compare.workloads import (
    CONNECT_REQUEST_BYTES,
    PARALLEL_STREAMS,
    SMALL_REQUEST_BYTES,
    VerificationError,
    Workload,
    WorkloadSizes,
    run_bulk_stream,
    run_requests,
)

__all__ = [
    "IMPAIRMENTS",
    "QUICK_IMPAIRMENTS",
    "TRANSPORTS",
    "CompareConfig",
    "CompareResult",
    "ImpairmentSpec",
    "Row",
    "parse_impairment",
    "run_comparison",
]

TRANSPORTS = (*PYTHON_TRANSPORTS, "go")
TCP_TRANSPORTS = ("tcp", "tls")
ROW_TIMEOUT_S = 120.0
SERVER_START_TIMEOUT_S = 20.0
REQUESTS_TIME_LIMIT_S = 8.0
"""The ``rr`` workload stops early after this long (a 100 ms path needs 100 s for 1000)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ImpairmentSpec:
    """A named impairment as people ask for it; both directions get the same."""

    name: str
    loss: float = 0.0
    """Probability that a packet is lost, each way."""
    rtt_ms: float = 0.0
    """Added round-trip time (half each way)."""
    jitter_ms: float = 0.0
    """Each packet's one-way delay varies within ± this."""
    reorder: float = 0.0
    """Probability that a packet is held back ``reorder_ms`` so later ones overtake it."""
    reorder_ms: float = 2.0
    rate_mbit: float | None = None
    """Bandwidth cap (tbf on the relay's devices), Mbit/s each way."""

    @property
    def is_none(self) -> bool:
        """Whether the path is left as it is."""
        return (
            self.loss == 0
            and self.rtt_ms == 0
            and self.jitter_ms == 0
            and self.reorder == 0
            and self.rate_mbit is None
        )

    def model(self, seed: int, *, with_rate: bool = False) -> Impairment:
        """The relay's model; the rate cap is tbf's on the namespace path, else the model's."""
        return Impairment.symmetric(
            seed=seed,
            loss=self.loss,
            delay_ns=int(self.rtt_ms * 1e6 / 2),
            jitter_ns=int(self.jitter_ms * 1e6),
            reorder=self.reorder,
            reorder_delay_ns=int(self.reorder_ms * 1e6),
            rate_bytes_per_s=self.tbf_bytes_per_s if with_rate else None,
        )

    @property
    def tbf_bytes_per_s(self) -> int | None:
        """The tbf rate, or None."""
        return int(self.rate_mbit * 1e6 / 8) if self.rate_mbit is not None else None

    def as_json(self) -> dict[str, Any]:
        """``{"name", "loss", "rtt_ms", ...}`` for the JSON rows."""
        return {
            "name": self.name,
            "loss": self.loss,
            "rtt_ms": self.rtt_ms,
            "jitter_ms": self.jitter_ms,
            "reorder": self.reorder,
            "rate_mbit": self.rate_mbit,
        }


IMPAIRMENTS = {
    spec.name: spec
    for spec in (
        ImpairmentSpec(name="none"),
        ImpairmentSpec(name="loss1", loss=0.01),
        ImpairmentSpec(name="loss2", loss=0.02),
        ImpairmentSpec(name="loss5", loss=0.05),
        ImpairmentSpec(name="rtt20", rtt_ms=20),
        ImpairmentSpec(name="rtt20-loss2", rtt_ms=20, loss=0.02),
        ImpairmentSpec(name="rtt20-jitter", rtt_ms=20, jitter_ms=2),
        ImpairmentSpec(name="rtt100", rtt_ms=100),
        ImpairmentSpec(name="rtt100-loss1", rtt_ms=100, loss=0.01),
        ImpairmentSpec(name="rtt100-jitter", rtt_ms=100, jitter_ms=10),
        ImpairmentSpec(name="reorder", reorder=0.02),
        ImpairmentSpec(name="cap20", rate_mbit=20, rtt_ms=20),
    )
}
"""The named impairments (``--impairments``); any other is given as ``key=value,...``.

Jitter draws each packet's delay independently, so packets overtake each
other (the shared model's semantics): the ``-jitter`` presets are delay plus
reordering, kept apart from the plain delay ones.
"""
QUICK_IMPAIRMENTS = ("none", "loss2", "rtt20", "rtt20-loss2")

_SPEC_KEYS = {
    "loss": "loss",
    "rtt": "rtt_ms",
    "jitter": "jitter_ms",
    "reorder": "reorder",
    "rate": "rate_mbit",
}


def parse_impairment(text: str) -> ImpairmentSpec:
    """A preset name, or ``loss=0.02,rtt=20,jitter=1,reorder=0.01,rate=20`` (ms, Mbit/s).

    Loss and reorder take a fraction (0.02) or a percentage (2%).
    """
    if text in IMPAIRMENTS:
        return IMPAIRMENTS[text]
    values: dict[str, Any] = {}
    for part in text.split(","):
        key, equals, value = part.partition("=")
        if not equals or key.strip() not in _SPEC_KEYS:
            known = ", ".join([*IMPAIRMENTS, *(f"{key}=" for key in _SPEC_KEYS)])
            raise ValueError(f"unknown impairment {text!r} (known: {known})")
        value = value.strip()
        try:
            number = float(value.removesuffix("%")) / (100 if value.endswith("%") else 1)
        except ValueError:
            raise ValueError(f"impairment {text!r}: {key}={value!r} is not a number") from None
        if number < 0 or (key in ("loss", "reorder") and number > 1):
            raise ValueError(f"impairment {text!r}: {key}={value!r} is out of range")
        values[_SPEC_KEYS[key.strip()]] = number
    return ImpairmentSpec(name=text, **values)


@dataclass(frozen=True, slots=True, kw_only=True)
class CompareConfig:
    """What to run."""

    transports: tuple[str, ...] = TRANSPORTS
    workloads: tuple[Workload, ...] = tuple(Workload)
    impairments: tuple[ImpairmentSpec, ...] = tuple(IMPAIRMENTS[name] for name in QUICK_IMPAIRMENTS)
    sizes: WorkloadSizes = field(default_factory=WorkloadSizes)
    seed: int = 1
    go_peer: str | None = None
    """The Go interop peer's binary (default: the test suite's cache)."""
    path: str = "auto"
    """``netns`` (packet relay, namespaces, tbf), ``relay`` (UDP and TCP relays on
    loopback), ``direct`` (loopback, no relay: only ``none``), or ``auto``: netns
    where it can be built, else relay."""
    ceiling_seconds: float = 1.0
    row_timeout_s: float = ROW_TIMEOUT_S


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One measurement (or the reason it could not be made)."""

    transport: str
    workload: Workload
    impairment: ImpairmentSpec
    ok: bool
    skipped: str | None = None
    error: str | None = None
    bytes: int = 0
    """Payload bytes the workload moved (and verified)."""
    elapsed_s: float = 0.0
    mb_s: float | None = None
    requests_per_s: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    retransmissions: int | None = None
    """Packets (QOTP, QUIC: declared lost) or segments (TCP) the client side sent again."""
    cpu_s_client: float | None = None
    cpu_s_server: float | None = None
    measured_loss: float | None = None
    """Fraction of packets the relay dropped in this row, both directions."""
    relayed_packets: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The JSON row of ``qotp bench compare --json``."""
        return {
            "transport": self.transport,
            "workload": self.workload.value,
            "impairment": self.impairment.as_json(),
            "ok": self.ok,
            "skipped": self.skipped,
            "error": self.error,
            "bytes": self.bytes,
            "elapsed_s": _round(self.elapsed_s, 4),
            "mb_s": _round(self.mb_s, 3),
            "requests_per_s": _round(self.requests_per_s, 1),
            "latency_ms": {
                "p50": _round(self.latency_ms_p50, 3),
                "p99": _round(self.latency_ms_p99, 3),
            },
            "retransmissions": self.retransmissions,
            "cpu_s": {
                "client": _round(self.cpu_s_client, 3),
                "server": _round(self.cpu_s_server, 3),
            },
            "measured_loss": _round(self.measured_loss, 5),
            "relayed_packets": self.relayed_packets,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True, slots=True, kw_only=True)
class CompareResult:
    """All rows, plus what the reader needs to trust them."""

    rows: tuple[Row, ...]
    path: str
    """``netns``, ``relay`` or ``direct`` (see :attr:`CompareConfig.path`)."""
    ceiling: RelayCeiling | None
    notes: tuple[str, ...]
    """What was missing or skipped, one line each."""

    def as_json(self) -> dict[str, Any]:
        """``{"rows": [...], "path", "relay_ceiling", "notes"}``."""
        ceiling = None
        if self.ceiling is not None:
            ceiling = {
                "datagram_bytes": self.ceiling.datagram_bytes,
                "mb_s": round(self.ceiling.megabytes_per_s, 1),
                "mb_per_cpu_s": round(self.ceiling.megabytes_per_cpu_s, 1),
            }
        return {
            "rows": [row.as_json() for row in self.rows],
            "path": self.path,
            "relay_ceiling": ceiling,
            "notes": list(self.notes),
        }


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# ---------------------------------------------------------------- servers


class _ServerProcess:
    """A server child process: started, asked for its address, stopped by closing stdin."""

    def __init__(self, command: list[str], *, go: bool = False) -> None:
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.address = self._wait_address(go)

    def _wait_address(self, go: bool) -> Address:
        lines = LineReader(self.process.stdout)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while (line := lines.readline(max(0.0, deadline - time.monotonic()))) is not None:
            if go and line.startswith("listening="):
                host, _, port = line.removeprefix("listening=").strip().rpartition(":")
                return (host.strip("[]"), int(port))
            if not go and line.startswith("{"):
                answer = json.loads(line)
                if not answer.get("ok"):
                    raise RuntimeError(str(answer.get("error")))
                return (answer["address"][0], int(answer["address"][1]))
        reason = self.stderr_tail()
        self.stop()
        raise RuntimeError(f"the server did not start: {reason}")

    def cpu_seconds(self) -> float | None:
        return process_cpu_seconds(self.process.pid)

    def stderr_tail(self) -> str:
        if self.process.poll() is None:
            return "no answer"
        stderr = self.process.stderr
        error = stderr.read() if stderr is not None and not stderr.closed else ""
        lines = [line for line in (error or "").splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self.process.returncode}"

    def stop(self) -> None:
        process = self.process
        try:
            if process.stdin is not None and not process.stdin.closed:
                process.stdin.close()
            process.wait(timeout=3)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


# ---------------------------------------------------------------- workloads


@dataclass(slots=True)
class _Measured:
    bytes: int = 0
    elapsed_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    retransmissions: int | None = None


def _add(total: int | None, value: int | None) -> int | None:
    if value is None:
        return total
    return value if total is None else total + value


async def _close_all(sessions: Sequence[ClientSession]) -> None:
    await asyncio.gather(*(session.close() for session in sessions), return_exceptions=True)


async def _run_workload(
    transport: ClientTransport,
    address: Address,
    workload: Workload,
    sizes: WorkloadSizes,
    seed: int,
) -> _Measured:
    clock = time.perf_counter
    measured = _Measured()
    if workload is Workload.BULK:
        session = await transport.connect(address)
        try:
            stream = await session.open_stream()
            start = clock()
            await run_bulk_stream(stream, seed, sizes.bulk_bytes)
            measured.elapsed_s = clock() - start
            measured.bytes = sizes.bulk_bytes
            measured.retransmissions = session.retransmissions()
            stream.close()
        finally:
            await session.close()
        return measured
    if workload is Workload.BULK_PARALLEL:
        per_stream = sizes.bulk_bytes // PARALLEL_STREAMS
        connections = 1 if transport.streams_share_connection else PARALLEL_STREAMS
        sessions = await asyncio.gather(*(transport.connect(address) for _ in range(connections)))
        try:
            streams = [
                await sessions[index % connections].open_stream()
                for index in range(PARALLEL_STREAMS)
            ]
            start = clock()
            await asyncio.gather(
                *(
                    run_bulk_stream(stream, seed + index, per_stream)
                    for index, stream in enumerate(streams)
                )
            )
            measured.elapsed_s = clock() - start
            measured.bytes = per_stream * PARALLEL_STREAMS
            for session in sessions:
                measured.retransmissions = _add(measured.retransmissions, session.retransmissions())
            for stream in streams:
                stream.close()
        finally:
            await _close_all(sessions)
        return measured
    if workload is Workload.CONNECT:
        for index in range(sizes.connects):
            start = clock()
            session = await transport.connect(address)
            try:
                stream = await session.open_stream()
                answered_at: list[float] = []
                await run_requests(
                    stream, seed + index, 1, CONNECT_REQUEST_BYTES, clock, answered_at=answered_at
                )
                measured.latencies.append(answered_at[0] - start)
                measured.retransmissions = _add(measured.retransmissions, session.retransmissions())
                stream.close()
            finally:
                await session.close()
        measured.requests = sizes.connects
        measured.bytes = sizes.connects * CONNECT_REQUEST_BYTES
        measured.elapsed_s = sum(measured.latencies)
        return measured
    session = await transport.connect(address)
    try:
        stream = await session.open_stream()
        start = clock()
        measured.latencies = await run_requests(
            stream,
            seed,
            sizes.requests,
            SMALL_REQUEST_BYTES,
            clock,
            time_limit_s=REQUESTS_TIME_LIMIT_S,
        )
        measured.elapsed_s = clock() - start
        measured.requests = len(measured.latencies)
        measured.bytes = measured.requests * SMALL_REQUEST_BYTES
        measured.retransmissions = session.retransmissions()
        stream.close()
    finally:
        await session.close()
    return measured


def _row_from(
    base: Row, workload: Workload, measured: _Measured, cpu: tuple[float | None, float | None]
) -> Row:
    row = replace(
        base,
        ok=True,
        bytes=measured.bytes,
        elapsed_s=measured.elapsed_s,
        retransmissions=measured.retransmissions,
        cpu_s_client=cpu[0],
        cpu_s_server=cpu[1],
    )
    if workload in (Workload.BULK, Workload.BULK_PARALLEL) and measured.elapsed_s > 0:
        row = replace(row, mb_s=measured.bytes / measured.elapsed_s / 1e6)
    if measured.latencies:
        row = replace(
            row,
            latency_ms_p50=_percentile(measured.latencies, 0.5) * 1e3,
            latency_ms_p99=_percentile(measured.latencies, 0.99) * 1e3,
        )
    if workload is Workload.REQUEST_RESPONSE and measured.elapsed_s > 0:
        row = replace(row, requests_per_s=measured.requests / measured.elapsed_s)
    return row


# ---------------------------------------------------------------- the run


ProgressCallback = Callable[[Row], None]


class _Run:
    """State of one comparison: credentials, the path, the rows so far."""

    def __init__(self, config: CompareConfig, directory: Path, progress: ProgressCallback) -> None:
        self.config = config
        self.credentials: Credentials = make_credentials(directory)
        self.settings = TransportSettings(credentials=self.credentials)
        self.progress = progress
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.path: NamespacePath | None = None
        self.path_kind = "direct"
        self.relay: RelayProcess | None = None
        self.relay_protocol = "udp"
        self.server_address: Address = ("127.0.0.1", 0)
        self.dial_address: Address = ("127.0.0.1", 0)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        self.progress(row)

    def skip_all(self, transport: str, reason: str) -> None:
        for impairment in self.config.impairments:
            for workload in self.config.workloads:
                self.add(_skipped(transport, workload, impairment, reason))

    @property
    def server_host(self) -> str:
        return self.path.server_address if self.path is not None else "127.0.0.1"

    def server_command(self, command: list[str]) -> list[str]:
        return [*self.path.exec_prefix, *command] if self.path is not None else command

    def python_server(self, transport: str) -> _ServerProcess:
        credentials = self.credentials
        return _ServerProcess(
            self.server_command(
                [
                    sys.executable, "-m", "qotp.compare.server",
                    "--transport", transport,
                    "--host", self.server_host,
                    "--ca", str(credentials.ca_file),
                    "--cert", str(credentials.certificate_file),
                    "--key", str(credentials.key_file),
                    "--psk", credentials.psk.hex(),
                ]
            )
        )  # fmt: skip

    def attach(self, transport: str, server: Address) -> None:
        """Start the loopback relay in front of a transport's server (relay path only)."""
        self.server_address = server
        self.dial_address = server
        if self.path_kind == "relay":
            self.relay = RelayProcess("tcp" if transport in TCP_TRANSPORTS else "udp", server)
            self.relay_protocol = "tcp" if transport in TCP_TRANSPORTS else "udp"

    def detach(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None

    def apply(self, impairment: ImpairmentSpec, seed: int) -> str | None:
        """Put the impairment on the path; the reason if it cannot be."""
        if self.path is not None:
            self.path.set_impairment(
                impairment.model(seed), tbf_bytes_per_s=impairment.tbf_bytes_per_s
            )
            return None
        if self.relay is not None:
            model = impairment.model(seed, with_rate=True)
            if self.relay_protocol == "tcp":
                limitation = stream_relay_limitation(model)
                if limitation is not None:
                    return limitation
            answer = self.relay.command(impairment=impairment_to_json(model))
            self.dial_address = (answer["address"][0], int(answer["address"][1]))
            return None
        return None if impairment.is_none else "impairments need a relay (--path netns or relay)"

    def relay_loss(self) -> tuple[float | None, int | None]:
        if self.path is not None:
            stats = self.path.statistics()
            received = stats["to_server"]["received"] + stats["to_client"]["received"]
            dropped = stats["to_server"]["dropped"] + stats["to_client"]["dropped"]
        elif self.relay is not None:
            stats = self.relay.command(stats=True)["stats"]
            received, dropped = stats["received"], stats["dropped"]
        else:
            return None, None
        return (dropped / received if received else 0.0), int(received)


def _skipped(transport: str, workload: Workload, impairment: ImpairmentSpec, reason: str) -> Row:
    return Row(
        transport=transport, workload=workload, impairment=impairment, ok=False, skipped=reason
    )


async def _python_transport(run: _Run, name: str) -> None:
    missing = transport_missing(name)
    if missing is not None:
        run.notes.append(f"{name}: {missing}")
        run.skip_all(name, missing)
        return
    client = client_transport(name, run.settings)
    server = await asyncio.to_thread(run.python_server, name)
    try:
        await asyncio.to_thread(run.attach, name, server.address)
        for index, impairment in enumerate(run.config.impairments):
            for workload in run.config.workloads:
                base = Row(transport=name, workload=workload, impairment=impairment, ok=False)
                reason = await asyncio.to_thread(run.apply, impairment, run.config.seed + index)
                if reason is not None:
                    run.add(replace(base, skipped=reason))
                    continue
                cpu_client = time.process_time()
                cpu_server = server.cpu_seconds()
                try:
                    measured = await asyncio.wait_for(
                        _run_workload(
                            client,
                            run.dial_address,
                            workload,
                            run.config.sizes,
                            run.config.seed + index,
                        ),
                        run.config.row_timeout_s,
                    )
                except TimeoutError:
                    row = replace(base, error=f"timed out after {run.config.row_timeout_s:.0f} s")
                except (
                    VerificationError,
                    ConnectionError,
                    OSError,
                    asyncio.IncompleteReadError,
                    TransportUnavailable,
                ) as error:
                    row = replace(base, error=f"{type(error).__name__}: {error}"[:300])
                else:
                    server_after = server.cpu_seconds()
                    cpu = (
                        time.process_time() - cpu_client,
                        server_after - cpu_server
                        if server_after is not None and cpu_server is not None
                        else None,
                    )
                    row = _row_from(base, workload, measured, cpu)
                loss, packets = await asyncio.to_thread(run.relay_loss)
                run.add(replace(row, measured_loss=loss, relayed_packets=packets))
    finally:
        run.detach()
        server.stop()
        await client.aclose()


def _go_rows(run: _Run) -> None:
    binary, reason = find_go_peer(run.config.go_peer)
    if binary is None:
        assert reason is not None
        run.notes.append(f"go: {reason}")
        run.skip_all("go", reason)
        return
    server = _ServerProcess(
        run.server_command(
            [str(binary), "server", "--listen", f"{run.server_host}:0", "--mode", "digest"]
        ),
        go=True,
    )
    try:
        run.attach("go", server.address)
        for index, impairment in enumerate(run.config.impairments):
            for workload in run.config.workloads:
                base = Row(transport="go", workload=workload, impairment=impairment, ok=False)
                if workload not in (Workload.BULK, Workload.BULK_PARALLEL):
                    run.add(
                        replace(base, skipped="the Go peer speaks only the bulk digest protocol")
                    )
                    continue
                reason = run.apply(impairment, run.config.seed + index)
                if reason is not None:
                    run.add(replace(base, skipped=reason))
                    continue
                streams = 1 if workload is Workload.BULK else PARALLEL_STREAMS
                sizes = run.config.sizes
                size = min(sizes.bulk_bytes, sizes.go_bulk_bytes) // streams
                host, port = run.dial_address
                children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
                server_before = server.cpu_seconds()
                command = [
                    str(binary),
                    "client",
                    "--connect",
                    f"{host}:{port}",
                    "--streams",
                    str(streams),
                    "--bytes",
                    str(size),
                    "--mode",
                    "digest",
                    "--timeout",
                    str(run.config.row_timeout_s),
                ]
                try:
                    finished = subprocess.run(
                        command,
                        capture_output=True,
                        text=True,
                        timeout=run.config.row_timeout_s + 10,
                    )
                    report = json.loads(finished.stdout.strip().splitlines()[-1])
                except (subprocess.TimeoutExpired, ValueError, IndexError) as error:
                    row = replace(base, error=f"go client: {type(error).__name__}")
                else:
                    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    server_after = server.cpu_seconds()
                    client_cpu = (children_after.ru_utime + children_after.ru_stime) - (
                        children_before.ru_utime + children_before.ru_stime
                    )
                    measured = _Measured(
                        bytes=int(report.get("total_bytes", 0)),
                        elapsed_s=float(report.get("elapsed_s", 0.0)),
                    )
                    server_cpu = (
                        server_after - server_before
                        if server_after is not None and server_before is not None
                        else None
                    )
                    if report.get("ok"):
                        row = _row_from(base, workload, measured, (client_cpu, server_cpu))
                    else:
                        row = replace(base, error=str(report.get("error", "failed"))[:300])
                loss, packets = run.relay_loss()
                run.add(replace(row, measured_loss=loss, relayed_packets=packets))
    finally:
        run.detach()
        server.stop()


async def run_comparison(
    config: CompareConfig, progress: ProgressCallback | None = None
) -> CompareResult:
    """Run every selected row; never raises for a transport that fails (its rows say why)."""
    with tempfile.TemporaryDirectory(prefix="qotp-compare-") as directory:
        run = _Run(config, Path(directory), progress or (lambda row: None))
        ceiling: RelayCeiling | None = None
        kind = config.path
        if kind not in ("auto", "netns", "relay", "direct"):
            raise ValueError(f"unknown path {kind!r}")
        missing = namespaces_missing()
        if kind == "netns" and missing is not None:
            raise RuntimeError(f"--path netns: {missing}")
        if kind == "auto":
            kind = "netns" if missing is None else "relay"
            if missing is not None:
                run.notes.append(
                    f"no namespace path ({missing}): loopback relays instead; "
                    "TCP and TLS rows with loss or reordering are skipped"
                )
        run.path_kind = kind
        with contextlib.ExitStack() as stack:
            if kind == "netns":
                run.path = stack.enter_context(NamespacePath())
                if config.ceiling_seconds > 0:
                    ceiling = await asyncio.to_thread(
                        run.path.measure_ceiling, seconds=config.ceiling_seconds
                    )
            elif kind == "relay" and config.ceiling_seconds > 0:
                ceiling = await _udp_relay_ceiling(config.ceiling_seconds)
            for name in config.transports:
                if name == "go":
                    await asyncio.to_thread(_go_rows, run)
                else:
                    await _python_transport(run, name)
        return CompareResult(
            rows=tuple(run.rows),
            path=kind,
            ceiling=ceiling,
            notes=tuple(run.notes),
        )


async def _udp_relay_ceiling(seconds: float) -> RelayCeiling:
    """The UDP relay's ceiling (its own measurement), in this module's terms."""
    from qotp.compare.relay import measure_ceiling

    measured = await measure_ceiling(seconds=seconds, datagram_bytes=1400)
    return RelayCeiling(
        datagram_bytes=measured.datagram_bytes,
        seconds=measured.seconds,
        offered=measured.offered_datagrams,
        relayed=measured.relayed_datagrams,
        delivered=measured.delivered_datagrams,
        relay_cpu_s=measured.relay_cpu_s,
    )
