"""The ``dtls`` command line: openssl-like options, and clean one-line failures (issue 10).

Every failure case: a non-zero exit, one line naming the likely cause, no
traceback, well under 4 KB of output.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from dtls_helpers import make_pki, pem_chain, pem_key
from dtls_processes import PIPE, STEP_SECONDS, dtls_cli, read_until

import dtls.asyncio as dtls_asyncio
from dtls.cli import main
from dtls.config import DTLSConfiguration, load_certificate_chain, load_private_key

MAX_FAILURE_OUTPUT_BYTES = 4096


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("dtls-cli")
    pki = make_pki()
    chain, key = pki.issue("localhost", sans=("127.0.0.1",))
    other_chain, other_key = pki.issue("other.test")
    paths = {
        "ca": pem_chain((pki.ca_certificate,)),
        "cert": pem_chain(chain),
        "key": pem_key(key),
        "other.key": pem_key(other_key),
        "garbage": b"this is not PEM\n",
    }
    out = {}
    for name, content in paths.items():
        path = directory / f"{name}.pem"
        path.write_bytes(content)
        out[name] = str(path)
    assert other_chain
    return out


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _one_line_failure(code: int, out: str, err: str, expected_code: int, *needles: str) -> None:
    assert code == expected_code, (code, out, err)
    assert "Traceback" not in out + err
    assert len((out + err).encode()) < MAX_FAILURE_OUTPUT_BYTES
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- failures found before any socket: in process ----------------------------------------


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["client", "127.0.0.1:99999"], ["port 99999 is out of range"]),
        (["client", "127.0.0.1:0"], ["port 0 is out of range: use 1 to 65535"]),
        (["client", "no-port"], ["expected HOST:PORT"]),
        (["server", "--listen", "127.0.0.1:70000"], ["port 70000 is out of range"]),
        (["client", "h:1", "--cipher", "NOPE"], ["unknown cipher suite 'NOPE'", "--list-ciphers"]),
        (["client", "h:1", "--groups", "P-999"], ["unknown group 'P-999'"]),
        (["client", "h:1", "--psk", "zz"], ["PSK is not hex"]),
        (["client", "h:1", "--mtu", "20"], ["mtu 20"]),
        (["client", "h:1", "--timeout", "-5"], ["timeout -5 s"]),
        (
            ["client", "127.0.0.1:1", "--dtls1_3", "--cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
            ["no cipher suite for the allowed versions", "DTLS 1.3 needs"],
        ),
        (["server", "--listen", "127.0.0.1:0"], ["a server needs --cert"]),
        (
            ["client", "127.0.0.1:1", "--insecure", "--sess-out", "/nonexistent/sess"],
            ["argument --sess-out: cannot write the session to /nonexistent/sess: no directory"],
        ),
        (
            ["client", "127.0.0.1:1", "--insecure", "--keylog", "/nonexistent/k.log"],
            ["argument --keylog: cannot write the key log to /nonexistent/k.log: no directory"],
        ),
        (["client", "127.0.0.1:1", "--sess-out", "/"], ["/ is a directory"]),
        ([], ["name a command: server or client"]),
    ],
)
def test_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], needles: list[str]
) -> None:
    code = main(argv)
    captured = capsys.readouterr()
    _one_line_failure(code, captured.out, captured.err, 2, *needles)


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("missing", ["cannot read the certificate file", "No such file"]),
        ("garbage", ["holds no PEM certificate", "check --cert"]),
        (
            "bad key",
            ["cannot read the private key ", ": not a PEM or DER private key (check --key)"],
        ),
        ("certificate as key", ["it holds a certificate, not a key (check --key)"]),
        ("wrong key", ["does not belong to the certificate"]),
    ],
)
def test_bad_certificate_and_key_files(
    capsys: pytest.CaptureFixture[str], files: dict[str, str], case: str, needles: list[str]
) -> None:
    cert, key = {
        "missing": ("/nonexistent/cert.pem", files["key"]),
        "garbage": (files["garbage"], files["key"]),
        "bad key": (files["cert"], files["garbage"]),
        "certificate as key": (files["cert"], files["cert"]),
        "wrong key": (files["cert"], files["other.key"]),
    }[case]
    code = main(["server", "--listen", "127.0.0.1:0", "--cert", cert, "--key", key])
    captured = capsys.readouterr()
    _one_line_failure(code, captured.out, captured.err, 1, *needles)
    assert "http" not in captured.err  # not cryptography's text with its FAQ link


def test_der_private_key_is_read_like_openssl_keyform_der(
    files: dict[str, str], tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization

    from dtls.cli.common import load_chain_and_key

    key = load_private_key(Path(files["key"]).read_bytes())
    der = tmp_path / "key.der"
    der.write_bytes(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    _, loaded = load_chain_and_key(files["cert"], str(der))
    assert loaded.private_numbers() == key.private_numbers()


def test_json_failures_are_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["client", "127.0.0.1:99999", "--json"]) == 2
    out = capsys.readouterr().out
    record = json.loads(out)
    assert record["ok"] is False and "out of range" in record["error"]


def test_list_ciphers_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-ciphers"]) == 0
    listing = capsys.readouterr().out
    assert "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" in listing
    assert "ECDHE-ECDSA-AES128-GCM-SHA256" in listing
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert "DTLSv1.2" in capsys.readouterr().out


# -- failures with sockets: real processes -------------------------------------------------


async def _run_cli(*argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
    async with dtls_cli(*argv, stdin=PIPE, stdout=PIPE, stderr=PIPE) as process:
        out, err = await asyncio.wait_for(process.communicate(stdin), 3 * STEP_SECONDS)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()


def test_bind_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        code, out, err = asyncio.run(
            _run_cli("server", "--listen", f"127.0.0.1:{port}", "--psk", "00112233")
        )
    _one_line_failure(code, out, err, 1, f"127.0.0.1:{port} is already in use")


def test_dns_error() -> None:
    code, out, err = asyncio.run(_run_cli("client", "no-such-host.invalid:4433", "--insecure"))
    _one_line_failure(code, out, err, 1, "cannot resolve host 'no-such-host.invalid'")


def test_closed_port_fails_at_once() -> None:
    port = _closed_port()
    code, out, err = asyncio.run(_run_cli("client", f"127.0.0.1:{port}", "--insecure"))
    _one_line_failure(code, out, err, 1, "the port is closed", "is the server running")


def test_no_answer() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        code, out, err = asyncio.run(
            _run_cli("client", f"127.0.0.1:{port}", "--insecure", "--timeout", "2")
        )
    _one_line_failure(code, out, err, 1, f"no answer from 127.0.0.1:{port} after 2 s")


def test_handshake_failure_names_the_alert(files: dict[str, str]) -> None:
    configuration = DTLSConfiguration(
        is_client=False, psk=bytes.fromhex("00112233"), psk_identity=b"expected"
    )

    async def run() -> tuple[int, str, str]:
        async with dtls_asyncio.serve("127.0.0.1", 0, configuration) as server:
            _, port = server.local_address
            return await _run_cli(
                "client", f"127.0.0.1:{port}", "--psk", "00112233", "--psk-identity", "other"
            )

    code, out, err = asyncio.run(run())
    _one_line_failure(code, out, err, 1, "failed: unknown_psk_identity", "check --psk-identity")


def _certificate_server(files: dict[str, str]) -> DTLSConfiguration:
    return DTLSConfiguration(
        is_client=False,
        certificate_chain=load_certificate_chain(Path(files["cert"]).read_bytes()),
        private_key=load_private_key(Path(files["key"]).read_bytes()),
    )


def test_the_wrong_kind_of_credentials_is_named(files: dict[str, str]) -> None:
    """A certificate client at a PSK-only server (which used to be silence, then "no
    answer"), and a PSK client at a certificate server ("no trust anchors" before)."""
    psk_server = DTLSConfiguration(
        is_client=False, psk=bytes.fromhex("00112233"), psk_identity=b"expected"
    )

    async def run() -> list[tuple[int, str, str]]:
        async with (
            dtls_asyncio.serve("127.0.0.1", 0, psk_server) as with_psk,
            dtls_asyncio.serve("127.0.0.1", 0, _certificate_server(files)) as with_certificate,
        ):
            psk_port, certificate_port = (
                with_psk.local_address[1],
                with_certificate.local_address[1],
            )
            return [
                await _run_cli("client", f"127.0.0.1:{psk_port}", "--insecure", "--timeout", "10"),
                await _run_cli(
                    "client", f"127.0.0.1:{psk_port}", "--insecure", "--dtls1_2", "--timeout", "10"
                ),
                await _run_cli(
                    "client",
                    f"127.0.0.1:{certificate_port}",
                    "--psk",
                    "00112233",
                    "--timeout",
                    "10",
                ),  # fmt: skip
                await _run_cli(
                    "client",
                    f"127.0.0.1:{certificate_port}",
                    "--psk",
                    "00112233",
                    "--dtls1_2",
                    "--timeout",
                    "10",
                ),  # fmt: skip
            ]

    insecure13, insecure12, psk13, psk12 = asyncio.run(run())
    for result in (insecure13, insecure12):
        _one_line_failure(*result, 1, "failed: handshake_failure", "it may want a PSK (--psk)")
    _one_line_failure(
        *psk13, 1, "the server did not take our PSK: it wants certificate authentication",
        "instead of --psk",
    )  # fmt: skip
    _one_line_failure(
        *psk12, 1, "failed: handshake_failure", "it may want certificate authentication"
    )


def test_server_logs_each_failed_handshake(files: dict[str, str]) -> None:
    """One line per failed handshake: who, the alert, what to check (m6)."""
    psk = bytes.fromhex("00112233")
    clients = {
        "wrong psk": DTLSConfiguration(psk=bytes.fromhex("ffeeddcc"), psk_identity=b"expected"),
        "wrong identity": DTLSConfiguration(psk=psk, psk_identity=b"other"),
        "certificate client": DTLSConfiguration(verify_peer=False),
    }

    async def run() -> bytes:
        async with dtls_cli(
            "server", "--listen", "127.0.0.1:0", "--psk", psk.hex(), "--psk-identity",
            "expected", stdout=PIPE, stderr=PIPE,
        ) as server:  # fmt: skip
            assert server.stderr is not None
            listening = await read_until(server.stderr, b"listening on")
            port = int(listening.split(b":")[-1])
            for configuration in clients.values():
                with pytest.raises(ConnectionError):
                    await dtls_asyncio.connect("127.0.0.1", port, configuration)
            seen = b""
            for _ in clients:
                seen += await read_until(server.stderr, b"handshake failed")
            return seen

    lines = asyncio.run(run()).decode().splitlines()
    assert len(lines) == 3, lines
    assert all(line.startswith("peer 127.0.0.1:") for line in lines), lines
    assert "decrypt_error" in lines[0] and "PSK" in lines[0]
    assert "unknown_psk_identity" in lines[1] and "--psk-identity" in lines[1]
    assert "handshake_failure: the client offers no PSK and we have no certificate" in lines[2]


def test_failed_handshake_lines_are_rate_limited() -> None:
    """A flood of failures prints at most FAILURE_LINES_PER_WINDOW lines per window, then
    one line with the count of the others when the window ends."""
    import io

    from dtls.cli.common import Output
    from dtls.cli.server import FAILURE_LINES_PER_WINDOW, FAILURE_WINDOW_SECONDS, FailureLog
    from dtls.errors import AlertDescription
    from dtls.events import HandshakeFailed

    stderr = io.StringIO()
    clock = [100.0]
    scheduled: list[tuple[float, Callable[[], None]]] = []
    log = FailureLog(
        Output(stderr=stderr),
        clock=lambda: clock[0],
        call_later=lambda delay, then: scheduled.append((delay, then)),
    )

    def fail(port: int) -> None:
        log(
            HandshakeFailed(
                peer=port,
                address=("10.0.0.1", port),
                reason="decrypt_error: PSK binder does not verify",
                alert=AlertDescription.decrypt_error,
            )
        )

    for port in range(1000, 1100):
        fail(port)
    lines = stderr.getvalue().splitlines()
    assert len(lines) == FAILURE_LINES_PER_WINDOW
    assert lines[0].startswith("peer 10.0.0.1:1000: handshake failed: decrypt_error")
    ((delay, then),) = scheduled
    assert delay == FAILURE_WINDOW_SECONDS
    clock[0] += delay
    then()
    lines = stderr.getvalue().splitlines()
    assert lines[-1].startswith(f"{100 - FAILURE_LINES_PER_WINDOW} more failed handshake(s)")
    fail(2000)  # a new window
    assert stderr.getvalue().splitlines()[-1].startswith("peer 10.0.0.1:2000:")
    log.flush()  # nothing left to count
    assert len(stderr.getvalue().splitlines()) == FAILURE_LINES_PER_WINDOW + 2


def test_wrong_psk_in_dtls_1_2_is_not_called_no_answer() -> None:
    """DTLS 1.2 has no alert for a Finished that does not decrypt: the handshake times
    out after the server's hello, which is no reason to ask whether it is running."""
    server_configuration = DTLSConfiguration(
        is_client=False, psk=bytes.fromhex("00112233"), psk_identity=b"expected"
    )

    async def run() -> tuple[int, str, str]:
        async with dtls_asyncio.serve("127.0.0.1", 0, server_configuration) as server:
            _, port = server.local_address
            return await _run_cli(
                "client", f"127.0.0.1:{port}", "--psk", "ffeeddcc", "--psk-identity",
                "expected", "--dtls1_2", "--timeout", "2",
            )  # fmt: skip

    _one_line_failure(
        *asyncio.run(run()), 1, "stopped after the server's hello", "check --psk on both sides"
    )


def test_client_fails_when_the_server_is_killed_mid_session(files: dict[str, str]) -> None:
    """P1: the server is SIGKILLed after echoing a line; the next line the client sends
    draws an ICMP port unreachable, which ends the session with one line and exit 1
    (it used to exit 0 without a word)."""

    async def run() -> tuple[int, bytes, str]:
        async with dtls_cli(
            "server", "--listen", "127.0.0.1:0", "--cert", files["cert"], "--key", files["key"],
            "--echo", "--json", stdout=PIPE, stderr=PIPE,
        ) as server:  # fmt: skip
            assert server.stdout is not None
            listening = json.loads(await read_until(server.stdout, b"listening"))
            port = listening["address"].rsplit(":", 1)[1]
            async with dtls_cli(
                "client", f"127.0.0.1:{port}", "--cafile", files["ca"], "--servername",
                "localhost", stdin=PIPE, stdout=PIPE, stderr=PIPE,
            ) as client:  # fmt: skip
                assert client.stdin is not None and client.stdout is not None
                client.stdin.write(b"one\n")
                await client.stdin.drain()
                echoed = await read_until(client.stdout, b"one")
                server.kill()
                await server.wait()
                client.stdin.write(b"two\n")
                await client.stdin.drain()
                _, err = await asyncio.wait_for(client.communicate(), STEP_SECONDS)
                assert client.returncode is not None
                return client.returncode, echoed, err.decode()

    code, echoed, err = asyncio.run(run())
    assert echoed == b"one\n"
    failure = err.splitlines()[-1]
    _one_line_failure(code, "", failure, 1, "the server at 127.0.0.1:", "stopped answering")
    assert "ICMP port unreachable" in failure and "is it still running?" in failure


def test_client_fails_when_its_close_notify_gets_no_answer(files: dict[str, str]) -> None:
    """P1: a server that never answers our close_notify (gone, or only unreachable)."""

    async def never_close(server: dtls_asyncio.DTLSServer) -> None:
        connection = await server.accept()
        while await connection.recv():
            pass
        await asyncio.sleep(3600)  # read the close_notify, never answer it

    async def run() -> tuple[int, str, str]:
        async with dtls_asyncio.serve("127.0.0.1", 0, _certificate_server(files)) as server:
            _, port = server.local_address
            silent = asyncio.create_task(never_close(server))
            result = await _run_cli(
                "client", f"127.0.0.1:{port}", "--cafile", files["ca"], "--servername",
                "localhost", stdin=b"hello\n",
            )  # fmt: skip
            silent.cancel()
            return result

    code, out, err = asyncio.run(run())
    failure = err.splitlines()[-1]
    _one_line_failure(code, out, failure, 1, "stopped answering: no close_notify back within 3 s")


def test_ctrl_c_is_one_line_and_130(files: dict[str, str]) -> None:
    async def run() -> tuple[int, str]:
        async with dtls_cli(
            "server", "--listen", "127.0.0.1:0", "--cert", files["cert"], "--key", files["key"],
            stdout=PIPE, stderr=PIPE,
        ) as server:  # fmt: skip
            assert server.stderr is not None
            await read_until(server.stderr, b"listening on")
            server.send_signal(signal.SIGINT)
            await asyncio.wait_for(server.wait(), STEP_SECONDS)
            assert server.returncode is not None
            return server.returncode, (await server.stderr.read()).decode()

    code, err = asyncio.run(run())
    _one_line_failure(code, "", err, 130, "interrupted: served 0 peer(s)")


# -- openssl parity ----------------------------------------------------------------------


def test_client_prints_what_was_negotiated_and_handshake_messages(files: dict[str, str]) -> None:
    async def run() -> tuple[int, str, str]:
        async with dtls_cli(
            "server", "--listen", "127.0.0.1:0", "--cert", files["cert"], "--key", files["key"],
            "--echo", "--naccept", "1", "--cid", "4", "--no-cookie", "--srtp",
            "SRTP_AEAD_AES_128_GCM", "--groups", "P-256", "--json",
            stdout=PIPE, stderr=PIPE,
        ) as server:  # fmt: skip
            assert server.stdout is not None
            listening = json.loads(await read_until(server.stdout, b"listening"))
            port = listening["address"].rsplit(":", 1)[1]
            code, out, err = await _run_cli(
                "client", f"127.0.0.1:{port}", "--cafile", files["ca"], "-v",
                "--own-cid", "0a0b0c", "--srtp", "SRTP_AEAD_AES_128_GCM",
                "--cipher", "ECDHE-ECDSA-AES256-GCM-SHA384", "--groups", "prime256v1",
                "--keymatexport", "EXTRACTOR-dtls_srtp", "--keymatexport-len", "16",
                "--dtls1_2", stdin=b"echo me\n",
            )  # fmt: skip
            await asyncio.wait_for(server.wait(), STEP_SECONDS)
            return code, out, err

    code, out, err = asyncio.run(run())
    assert code == 0, err
    assert out == "echo me\n"
    assert ">>> client_hello (message_seq 0" in err
    assert "<<< server_hello (message_seq 0" in err  # no cookie exchange: seq 0
    assert "hello_verify_request" not in err
    assert "DTLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" in err
    assert "group secp256r1" in err and "srtp SRTP_AEAD_AES_128_GCM" in err
    assert "our cid 0a0b0c" in err and "peer cid " in err
    assert "keying material (EXTRACTOR-dtls_srtp): " in err


def test_json_client_reports_and_resumption(files: dict[str, str], tmp_path: Path) -> None:
    session = tmp_path / "session.bin"
    chain_and_key = DTLSConfiguration(
        is_client=False,
        certificate_chain=load_certificate_chain(Path(files["cert"]).read_bytes()),
        private_key=load_private_key(Path(files["key"]).read_bytes()),
    )

    async def run() -> list[tuple[int, str, str]]:
        async with dtls_asyncio.serve("127.0.0.1", 0, chain_and_key) as server:
            _, port = server.local_address
            closer = asyncio.create_task(_answer_close(server))
            results = []
            for option in ("--sess-out", "--sess-in"):
                results.append(
                    await _run_cli(
                        "client",
                        f"127.0.0.1:{port}",
                        "--cafile",
                        files["ca"],
                        "--json",
                        "--keymatexport",
                        "EXPERIMENTAL-x",
                        option,
                        str(session),
                    )  # fmt: skip
                )
            closer.cancel()
            return results

    results = asyncio.run(run())
    connected = []
    for code, out, err in results:
        assert code == 0, err
        records = [json.loads(line) for line in out.splitlines()]
        assert [r["event"] for r in records] == ["connected", "closed"]
        connected.append(records[0])
    assert connected[0]["version"] == "DTLSv1.3" and connected[0]["resumed"] is False
    assert connected[1]["resumed"] is True
    assert len(bytes.fromhex(connected[0]["keying_material"])) == 20


def test_unusable_sess_in_is_a_warning_then_a_full_handshake(
    files: dict[str, str], tmp_path: Path
) -> None:
    """openssl s_client carries on without the session; so do we, saying why in one line
    ("path: strerror", not Python's errno repr), with exit 0 as the session succeeds."""
    configuration = DTLSConfiguration(
        is_client=False,
        certificate_chain=load_certificate_chain(Path(files["cert"]).read_bytes()),
        private_key=load_private_key(Path(files["key"]).read_bytes()),
    )
    missing = str(tmp_path / "missing.sess")

    async def run() -> list[tuple[int, str, str]]:
        async with dtls_asyncio.serve("127.0.0.1", 0, configuration) as server:
            _, port = server.local_address
            closer = asyncio.create_task(_answer_close(server))
            results = [
                await _run_cli(
                    "client",
                    f"127.0.0.1:{port}",
                    "--cafile",
                    files["ca"],
                    "--sess-in",
                    sess_in,
                    stdin=b"hi\n",
                )  # fmt: skip
                for sess_in in (missing, files["garbage"])
            ]
            closer.cancel()
            return results

    (code, _, err), (garbage_code, _, garbage_err) = asyncio.run(run())
    assert code == 0, err
    assert f"not resuming: {missing}: No such file or directory; doing a full handshake" in err
    assert "Errno" not in err and "Traceback" not in err
    assert "new session" in err
    assert garbage_code == 0, garbage_err
    assert f"not resuming: {files['garbage']}: " in garbage_err
    assert "new session" in garbage_err


async def _answer_close(server: dtls_asyncio.DTLSServer) -> None:
    """Serve peers one after another: read until close_notify, answer it."""
    while True:
        connection = await server.accept()
        while await connection.recv():
            pass
        connection.close()


def test_dtls_never_imports_qotp_nor_the_cli_extras() -> None:
    import subprocess
    import sys

    from dtls_processes import cli_environment

    probe = (
        "import sys, dtls, dtls.cli, dtls.asyncio, dtls.__main__; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('qotp', 'rich', 'dpkt')); "
        "print(bad)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=cli_environment(),
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_ipv6_addresses_are_printed_with_brackets(files: dict[str, str]) -> None:
    """The listening address is what a client passes back: [::1]:PORT, not ::1:PORT."""
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:
        pytest.skip("no IPv6 on this machine")

    async def run() -> str:
        async with dtls_cli(
            "server", "--listen", "[::1]:0", "--cert", files["cert"], "--key", files["key"],
            "--json", stdout=PIPE, stderr=PIPE,
        ) as server:  # fmt: skip
            assert server.stdout is not None
            listening = json.loads(await read_until(server.stdout, b"listening"))
            server.send_signal(signal.SIGINT)
            await asyncio.wait_for(server.wait(), STEP_SECONDS)
            return str(listening["address"])

    address = asyncio.run(run())
    assert address.startswith("[::1]:") and address.rsplit(":", 1)[1].isdigit()
