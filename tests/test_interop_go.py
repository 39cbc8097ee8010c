"""Live interop with the Go reference (github.com/qo-proto/qotp), both directions.

Each case starts one server process (ours: ``python -m qotp serve``; the
reference: our Go program in ``tests/interop/go`` built against the module)
and runs one client process of the other kind with the test protocol of
``qotp.tool``: digest or echo, on K streams of N bytes each, dialled in-band
or 0-RTT. Both clients check every byte by SHA-256 and exit non-zero on any
mismatch or timeout; the test also requires the server to survive the case,
since the reference stops or panics on input it does not like.

The Go peer is built from the reference's source tree (``$QOTP_REFERENCE_SOURCE``,
else ``../shared/reference/qotp-v0.2.19`` beside the project, as CI lays it out)
with a ``replace`` in a scratch copy of its module, or fetched from the module
proxy where no source tree is at hand; the binary is cached between runs (see
``tests/interop/goref.py``). The cases skip only where there is no Go toolchain
(or, without a source tree, where the proxy refuses the version), with the
reason. ``QOTP_REFERENCE_VERSION=v0.2.18`` builds against another version from
the proxy, and ``QOTP_INTEROP_BASELINE=1`` adds the reference with itself (Go
client, Go server) as the yardstick for a failing case.

Two behaviours of the reference shape what passes here (SPEC.md sections 9 and
10.5): a reference server that only receives acknowledges one packet per 10 ms
(our sender recognises that and is no longer clocked by those ACKs), and it may
never send its own CLOSE after ours (the echo client is done once every byte came
back and its CLOSE is acknowledged). The reference with itself still fails the
10-stream echo case for the second reason.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from interop import goref
from interop.captures import decrypt_capture, read_key_log, stream_bytes, stream_pieces
from interop.goref import (
    ClientRun,
    GoPeer,
    GoPeerBuildError,
    GoPeerUnavailable,
    Server,
    build_go_peer,
    is_checksum_database_refusal,
    run_client,
    start_server,
    stop_server,
)
from interop.relaythread import RelayThread

from qotp.compare.impairment import Direction, Impairment
from qotp.keys import KeyPair

SERVER_SEED_HEX = "5eed" * 16
# Generous budgets that only stop a hung peer (a 10 MB case takes about a second).
CLIENT_BASE_TIMEOUT_S = 30.0
CLIENT_SECONDS_PER_MB = 3.0
# The client enforces its own timeout; this margin lets it report first.
PROCESS_TIMEOUT_MARGIN_S = 20.0

SHAPES = [
    pytest.param(1, 1024, id="1x1KB"),
    pytest.param(1, 10_000_000, id="1x10MB"),
    pytest.param(10, 200_000, id="10x200KB"),
]
MODES = ["digest", "echo"]
HANDSHAKES = ["in-band", "0-rtt"]
DIRECTIONS = ["python-client-go-server", "go-client-python-server"]
# The reference with itself, the yardstick when a case above fails: opt-in, since
# it tests the reference rather than us.
BASELINE_ENVIRONMENT_VARIABLE = "QOTP_INTEROP_BASELINE"
MATRIX_DIRECTIONS = DIRECTIONS + (
    ["go-client-go-server"] if os.environ.get(BASELINE_ENVIRONMENT_VARIABLE) else []
)


@pytest.fixture(scope="session")
def go_peer() -> GoPeer:
    """The Go peer binary, built once (cached between runs), or a skip with the reason."""
    try:
        return build_go_peer()
    except GoPeerUnavailable as error:
        pytest.skip(f"Go reference peer unavailable: {error}")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    """Servers started by a test; all stopped afterwards, whatever happened."""
    started: list[Server] = []
    yield started
    for server in started:
        stop_server(server)


def _key_log_environment(key_log: Path | None) -> dict[str, str] | None:
    return None if key_log is None else {"QOTP_KEYLOGFILE": str(key_log)}


def _python_server(
    mode: str, tmp_path: Path, started: list[Server], *, key_log: Path | None = None
) -> Server:
    command = [sys.executable, "-m", "qotp", "serve", "--listen", "127.0.0.1:0"]
    command += ["--seed-hex", SERVER_SEED_HEX, "--mode", mode]
    server = start_server(
        command,
        name=f"python-server-{mode}",
        log_directory=tmp_path,
        environment=_key_log_environment(key_log),
    )
    started.append(server)
    return server


def _go_server(
    peer: GoPeer, mode: str, tmp_path: Path, started: list[Server], *, key_log: Path | None = None
) -> Server:
    command = [str(peer.binary), "server", "--listen", "127.0.0.1:0"]
    command += ["--seed-hex", SERVER_SEED_HEX, "--mode", mode, "--max-seconds", "600"]
    server = start_server(
        command,
        name=f"go-server-{mode}",
        log_directory=tmp_path,
        environment=_key_log_environment(key_log),
    )
    started.append(server)
    return server


def _client_timeout(streams: int, size: int) -> float:
    return CLIENT_BASE_TIMEOUT_S + streams * size / 1e6 * CLIENT_SECONDS_PER_MB


def test_go_server_identity_matches_ours(
    go_peer: GoPeer, tmp_path: Path, servers: list[Server]
) -> None:
    """The same 32-byte seed gives the same identity public key on both sides."""
    server = _go_server(go_peer, "digest", tmp_path, servers)
    assert server.public_key_hex == KeyPair.from_hex(SERVER_SEED_HEX).public_hex


@pytest.mark.parametrize(("streams", "size"), SHAPES)
@pytest.mark.parametrize("handshake", HANDSHAKES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("direction", MATRIX_DIRECTIONS)
def test_interop(
    go_peer: GoPeer,
    tmp_path: Path,
    servers: list[Server],
    record_property: pytest.RecordProperty,
    direction: str,
    mode: str,
    handshake: str,
    streams: int,
    size: int,
) -> None:
    """One connection, K streams of N bytes, every byte checked by SHA-256 by the client."""
    timeout = _client_timeout(streams, size)
    server = _server_for(direction, go_peer, mode, tmp_path, servers)
    command = _client_command(
        direction, go_peer, server, server.address, mode, handshake, streams, size, timeout
    )
    run = run_client(command, timeout=timeout + PROCESS_TIMEOUT_MARGIN_S)
    record_property("reference_version", go_peer.version)
    record_property("client_report", run.report)
    # One line per case in the output of `pytest -rP`: the numbers worth keeping.
    print(f"reference {go_peer.version}: {run.report}")
    _check_run(run, server, streams=streams, size=size)


def _server_for(
    direction: str, go_peer: GoPeer, mode: str, tmp_path: Path, started: list[Server]
) -> Server:
    if direction.endswith("go-server"):
        return _go_server(go_peer, mode, tmp_path, started)
    return _python_server(mode, tmp_path, started)


def _client_command(
    direction: str,
    go_peer: GoPeer,
    server: Server,
    address: str,
    mode: str,
    handshake: str,
    streams: int,
    size: int,
    timeout: float,
) -> list[str]:
    """The client's command line, dialling ``address`` (the server, or a relay before it)."""
    arguments = ["--streams", str(streams), "--bytes", str(size), "--mode", mode]
    arguments += ["--timeout", str(timeout)]
    if direction.startswith("python-client"):
        command = [sys.executable, "-m", "qotp", "send", address, *arguments]
    else:
        command = [str(go_peer.binary), "client", "--connect", address, *arguments]
    if handshake == "0-rtt":
        command += ["--pubkey", server.public_key_hex]
    return command


def _check_run(run: ClientRun, server: Server, *, streams: int, size: int) -> None:
    context = f"{run.describe()}\n--- {server.name} stderr tail:\n{server.stderr_tail()}"
    assert run.report is not None, f"client printed no JSON report\n{context}"
    assert run.report.get("ok") is True and run.returncode == 0, context
    assert run.report.get("streams") == streams, context
    assert run.report.get("total_bytes") == streams * size, context
    assert server.is_running(), f"{server.name} died during the case\n{context}"


IMPAIRMENT = Impairment.symmetric(seed=8, loss=0.05, reorder=0.03, duplicate=0.03)
"""5 % loss, 3 % held back 2 ms (overtaken by later datagrams), 3 % delivered twice; each way."""
IMPAIRED_CASES = [
    pytest.param("echo", "in-band", 4, 250_000, id="echo-in-band-4x250KB"),
    pytest.param("digest", "0-rtt", 1, 1_000_000, id="digest-0-rtt-1x1MB"),
]


@pytest.mark.parametrize(("mode", "handshake", "streams", "size"), IMPAIRED_CASES)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_interop_through_an_impaired_path(
    go_peer: GoPeer,
    tmp_path: Path,
    servers: list[Server],
    direction: str,
    mode: str,
    handshake: str,
    streams: int,
    size: int,
) -> None:
    """Through the UDP impairment relay (loss, reordering, duplication both ways); the
    client still checks every byte by SHA-256, and the relay shows the impairment happened."""
    timeout = _client_timeout(streams, size)
    server = _server_for(direction, go_peer, mode, tmp_path, servers)
    with RelayThread((server.host, server.port), impairment=IMPAIRMENT) as relay:
        command = _client_command(
            direction, go_peer, server, relay.address, mode, handshake, streams, size, timeout
        )
        run = run_client(command, timeout=timeout + PROCESS_TIMEOUT_MARGIN_S)
        statistics = relay.statistics()
    print(f"through the relay: {run.report}; {statistics}")
    _check_run(run, server, streams=streams, size=size)
    for path in (statistics.to_server, statistics.to_client):
        assert path.dropped_datagrams > 0 and path.duplicated_datagrams > 0, statistics
        assert path.loss_ratio == pytest.approx(0.05, abs=0.04), statistics
    assert statistics.to_server.reordered_datagrams + statistics.to_client.reordered_datagrams


KEY_LOG_STREAMS = 2
KEY_LOG_BYTES = 30_000


@pytest.mark.parametrize("handshake", HANDSHAKES)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_key_logs_decrypt_the_other_implementation(
    go_peer: GoPeer, tmp_path: Path, servers: list[Server], direction: str, handshake: str
) -> None:
    """An echo captured at the relay, decrypted by ``qotp decrypt`` with each side's key log.

    The reference's key-log lines (its server writes them) open our client's packets
    and its own; ours (``qotp serve`` / ``qotp send``) open its packets and ours. The
    decrypted data is checked too: each stream's bytes one way equal the echo the other
    way. One exception, the reference's: the ``QOTP_SHARED_SECRET_ID`` its responder
    logs keys nothing on the wire (SPEC.md 11.1), so its lines cannot open a 0-RTT
    InitCryptoSnd; ours can.
    """
    server_log = tmp_path / "server.keylog"
    client_log = tmp_path / "client.keylog"
    if direction.endswith("go-server"):
        server = _go_server(go_peer, "echo", tmp_path, servers, key_log=server_log)
    else:
        server = _python_server("echo", tmp_path, servers, key_log=server_log)
    timeout = _client_timeout(KEY_LOG_STREAMS, KEY_LOG_BYTES)
    with RelayThread((server.host, server.port), capture=True) as relay:
        command = _client_command(
            direction, go_peer, server, relay.address, "echo", handshake,
            KEY_LOG_STREAMS, KEY_LOG_BYTES, timeout,
        )  # fmt: skip
        run = run_client(
            command,
            timeout=timeout + PROCESS_TIMEOUT_MARGIN_S,
            environment={"QOTP_KEYLOGFILE": str(client_log)},
        )
    _check_run(run, server, streams=KEY_LOG_STREAMS, size=KEY_LOG_BYTES)
    # Our Go program writes a key log only as a server: the reference's initiator logs
    # before it knows the responder's key.
    if direction.startswith("python-client"):
        logs = {"reference": server_log, "ours": client_log}
    else:
        logs = {"ours": server_log}
    captured = relay.captured
    assert captured
    for whose, path in logs.items():
        decrypted = decrypt_capture(captured, read_key_log(path))
        for item in decrypted:
            if item.message_type == "InitSnd":
                assert item.ok  # cleartext, described without a secret
            elif whose == "reference" and item.message_type == "InitCryptoSnd":
                assert not item.ok and "authentication" in item.answer["error"], item.answer
            else:
                assert item.ok, f"{whose} key log: {item.answer} ({item.direction.value})"
        # The echo came back whole; every piece that went out decrypts to the same bytes.
        echoed = stream_bytes(decrypted, Direction.TO_CLIENT)
        assert sorted(echoed) == list(range(KEY_LOG_STREAMS)), whose
        assert all(len(data) == KEY_LOG_BYTES for data in echoed.values()), whose
        covered = 0
        for stream_id, parts in stream_pieces(decrypted, Direction.TO_SERVER).items():
            covered_here = bytearray(KEY_LOG_BYTES)
            for offset, data in parts.items():
                assert echoed[stream_id][offset : offset + len(data)] == data, (whose, offset)
                covered_here[offset : offset + len(data)] = b"\x01" * len(data)
            covered += sum(covered_here)
        missing = KEY_LOG_STREAMS * KEY_LOG_BYTES - covered
        if whose == "reference" and handshake == "0-rtt":
            # Only what rode in the InitCryptoSnd (and its repeats) stays closed.
            unopened = sum(len(item.datagram) for item in decrypted if not item.ok)
            assert missing <= unopened, (whose, missing, unopened)
        else:
            assert missing == 0, (whose, missing)


ROAMING_STREAMS = 2
ROAMING_BYTES = 1_000_000
ROAMING_AFTER_BYTES = 600_000
"""The client's source port changes once this much went through the relay."""


@pytest.mark.parametrize("handshake", HANDSHAKES)
def test_reference_client_roams_to_python_server(
    go_peer: GoPeer, tmp_path: Path, servers: list[Server], handshake: str
) -> None:
    """A NAT rebinding in the middle of an echo: the relay moves the reference client to a
    new source port; our server follows it, and every byte comes back verified."""
    server = _python_server("echo", tmp_path, servers)
    timeout = _client_timeout(ROAMING_STREAMS, ROAMING_BYTES)
    with RelayThread((server.host, server.port)) as relay:
        watcher = relay.rebind_after(ROAMING_AFTER_BYTES)
        command = _client_command(
            "go-client-python-server", go_peer, server, relay.address, "echo", handshake,
            ROAMING_STREAMS, ROAMING_BYTES, timeout,
        )  # fmt: skip
        run = run_client(command, timeout=timeout + PROCESS_TIMEOUT_MARGIN_S)
        watcher.join()
        statistics = relay.statistics()
    print(f"roaming: {run.report}; {statistics}")
    assert statistics.rebinds == 1, "the transfer ended before the rebinding"
    _check_run(run, server, streams=ROAMING_STREAMS, size=ROAMING_BYTES)


def test_reference_server_never_follows_a_roaming_client(
    go_peer: GoPeer, tmp_path: Path, servers: list[Server]
) -> None:
    """The reference keeps a connection's address from its first packet for good (v0.2.19
    listener.go/codec.go: the source address is used only to create a connection, never
    updated), so after a NAT rebinding of its client its replies go to the old port. This
    pins that behaviour (SPEC.md section 12): when a later version follows, this test says so."""
    server = _go_server(go_peer, "echo", tmp_path, servers)
    with RelayThread((server.host, server.port)) as relay:
        watcher = relay.rebind_after(ROAMING_AFTER_BYTES)
        command = _client_command(
            "python-client-go-server", go_peer, server, relay.address, "echo", "in-band",
            ROAMING_STREAMS, ROAMING_BYTES, 15.0,
        )  # fmt: skip
        run = run_client(command, timeout=15.0 + PROCESS_TIMEOUT_MARGIN_S)
        watcher.join()
        after = relay.statistics()
    assert after.rebinds == 1
    assert run.report is not None and run.report.get("ok") is False, run.describe()
    assert server.is_running()


def test_checksum_database_refusal_is_recognised() -> None:
    """The one fetch failure we work around (sum.golang.org not knowing a version)."""
    refusal = (
        "github.com/qo-proto/qotp@v0.2.18: verifying go.mod: github.com/qo-proto/qotp@v0.2.18/"
        "go.mod: reading https://proxy.golang.org/sumdb/sum.golang.org/lookup/"
        "github.com/qo-proto/qotp@v0.2.18: 404 Not Found"
    )
    proxy_refusal = (
        "github.com/qo-proto/qotp@v0.2.19: reading https://proxy.golang.org/github.com/"
        "qo-proto/qotp/@v/v0.2.19.info: 403 Forbidden\n\tserver response: "
        "This module version is not available."
    )
    assert is_checksum_database_refusal(refusal)
    assert not is_checksum_database_refusal(proxy_refusal)


def test_reference_source_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$QOTP_REFERENCE_SOURCE names the tree to build against; a wrong one is an error."""
    tree = tmp_path / "qotp-source"
    tree.mkdir()
    monkeypatch.setenv(goref.SOURCE_ENVIRONMENT_VARIABLE, str(tree))
    with pytest.raises(GoPeerBuildError, match="not the source"):
        goref.reference_source("v0.2.19")
    (tree / "go.mod").write_text(f"module {goref.MODULE}\n\ngo 1.25\n")
    assert goref.reference_source("v0.2.19") == tree.resolve()


def test_reference_source_default_is_beside_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(goref.SOURCE_ENVIRONMENT_VARIABLE, raising=False)
    expected = goref.SHARED_REFERENCE_DIRECTORY / "qotp-v0.2.19"
    found = goref.reference_source("v0.2.19")
    assert found == (expected.resolve() if (expected / "go.mod").is_file() else None)
    assert goref.reference_source("v0.0.1") is None  # no tree for that version: the proxy


def test_fingerprint_follows_the_reference_tree(tmp_path: Path) -> None:
    """A changed reference source gives a new cache key, so a stale binary is never reused."""
    if shutil.which("go") is None:
        pytest.skip("the Go toolchain ('go') is not on the PATH")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "go.mod").write_text(f"module {goref.MODULE}\n")
    (tree / "conn.go").write_text("package qotp\n")
    first = goref.source_fingerprint("v0.2.19", tree)
    assert goref.source_fingerprint("v0.2.19", tree) == first
    (tree / "conn.go").write_text("package qotp // changed\n")
    assert goref.source_fingerprint("v0.2.19", tree) != first
    assert goref.source_fingerprint("v0.2.19", None) != first
