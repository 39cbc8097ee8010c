"""``qotp serve`` / ``qotp send --crypto dtls``: certificate and PSK, both modes, as processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qotp.compare.certificates import Credentials, make_credentials

PSK = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return make_credentials(tmp_path_factory.mktemp("credentials"))


def _qotp(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "qotp", *arguments]


@pytest.fixture
def start_server() -> Iterator[object]:
    processes: list[subprocess.Popen[str]] = []

    def start(*arguments: str) -> str:
        process = subprocess.Popen(
            _qotp("serve", "--listen", "127.0.0.1:0", *arguments),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None
        for line in process.stdout:  # native prints pubkey= first
            if line.startswith("listening="):
                return line.strip().removeprefix("listening=")
        raise AssertionError(f"the server did not start (exit {process.wait()})")

    yield start
    for process in processes:
        process.kill()
        process.wait()


def _send(address: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _qotp("send", address, *arguments), capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("mode", ["digest", "echo"])
@pytest.mark.parametrize("authentication", ["certificate", "psk"])
def test_dtls_send_against_serve(
    start_server: object, credentials: Credentials, mode: str, authentication: str
) -> None:
    if authentication == "certificate":
        server_options = ["--cert", str(credentials.certificate_file)]
        server_options += ["--key", str(credentials.key_file)]
        client_options = ["--cafile", str(credentials.ca_file), "--server-name", "localhost"]
    else:
        server_options = ["--psk", PSK, "--psk-identity", "tests"]
        client_options = ["--psk", PSK, "--psk-identity", "tests"]
    address = start_server("--crypto", "dtls", "--mode", mode, *server_options)  # type: ignore[operator]
    result = _send(
        address, "--crypto", "dtls", "--mode", mode, "--streams", "3", "--bytes", "200000",
        *client_options,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["total_bytes"] == 600_000
    assert list(report)[:5] == ["ok", "streams", "total_bytes", "elapsed_s", "mb_s"]


def test_dtls_client_rejects_an_untrusted_certificate(
    start_server: object, credentials: Credentials, tmp_path: Path
) -> None:
    address = start_server(  # type: ignore[operator]
        "--crypto", "dtls",
        "--cert", str(credentials.certificate_file), "--key", str(credentials.key_file),
    )  # fmt: skip
    other = make_credentials(tmp_path / "other")
    result = _send(address, "--crypto", "dtls", "--cafile", str(other.ca_file), "--timeout", "10")
    assert result.returncode == 1
    assert json.loads(result.stdout)["ok"] is False
    assert "Traceback" not in result.stderr


def test_native_is_the_default_and_unchanged(start_server: object) -> None:
    address = start_server("--mode", "echo")  # type: ignore[operator]
    result = _send(address, "--mode", "echo", "--crypto", "native")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True


@pytest.mark.parametrize(
    ("command", "arguments", "message"),
    [
        ("send", ["127.0.0.1:9", "--psk", PSK], "--psk needs --crypto dtls"),
        ("send", ["127.0.0.1:9", "--crypto", "dtls"], "--cafile"),
        ("send", ["127.0.0.1:9", "--crypto", "dtls", "--psk", "zz"], "hex"),
        ("send", ["127.0.0.1:9", "--crypto", "dtls", "--psk", "0011"], "at least 16"),
        ("send", ["127.0.0.1:9", "--crypto", "dtls", "--cafile", "/nonexistent"], "cannot read"),
        ("send", ["127.0.0.1:9", "--crypto", "dtls", "--insecure", "--pubkey", "00" * 32], ""),
        ("serve", ["--crypto", "dtls"], "--cert FILE --key FILE, or --psk"),
        ("serve", ["--crypto", "dtls", "--cert", "/nonexistent"], "go together"),
        ("serve", ["--cert", "/nonexistent", "--key", "/nonexistent"], "needs --crypto dtls"),
        ("serve", ["--crypto", "dtls", "--psk", PSK, "--seed-hex", "11" * 32], "--seed-hex"),
    ],
)
def test_bad_crypto_options_fail_in_one_line(
    command: str, arguments: list[str], message: str
) -> None:
    result = subprocess.run(_qotp(command, *arguments), capture_output=True, text=True, timeout=30)
    assert result.returncode not in (0, None)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_unusable_server_credentials_fail_in_one_line(
    credentials: Credentials, tmp_path: Path
) -> None:
    """An encrypted key was an 'internal error'; a key of another certificate started anyway."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(credentials.key_file.read_bytes(), None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    other = make_credentials(tmp_path / "other")
    for key_file, message in ((encrypted, "encrypted"), (other.key_file, "does not belong")):
        result = subprocess.run(
            _qotp("serve", "--listen", "127.0.0.1:0", "--crypto", "dtls",
                  "--cert", str(credentials.certificate_file), "--key", str(key_file)),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert message in lines[0] and "internal error" not in lines[0]


def test_dtls_handshake_failures_name_their_cause(
    start_server: object, credentials: Credentials, tmp_path: Path
) -> None:
    """Each wrong credential was 'no answer ... is the server running?' (some after --timeout)."""
    certificate_server = start_server(  # type: ignore[operator]
        "--crypto", "dtls",
        "--cert", str(credentials.certificate_file), "--key", str(credentials.key_file),
    )  # fmt: skip
    psk_server = start_server("--crypto", "dtls", "--psk", PSK, "--psk-identity", "expected")  # type: ignore[operator]
    other = make_credentials(tmp_path / "other")
    wrong_psk = "ff" * 32
    cases = [
        (certificate_server, ["--cafile", str(other.ca_file)], "bad_certificate: "),
        (
            certificate_server,
            ["--cafile", str(credentials.ca_file), "--server-name", "wrong.example"],
            "not 'wrong.example'",
        ),
        (certificate_server, ["--psk", PSK], "handshake_failure: received from peer"),
        (psk_server, ["--insecure"], "handshake_failure: received from peer"),
        (psk_server, ["--psk", PSK, "--psk-identity", "other"], "check --psk-identity"),
        (psk_server, ["--psk", wrong_psk, "--psk-identity", "expected"], "is --psk the same"),
    ]
    running = [
        subprocess.Popen(
            _qotp("send", address, "--crypto", "dtls", "--timeout", "2", *options),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for address, options, _ in cases
    ]
    for process, (_, options, message) in zip(running, cases, strict=True):
        _out, err = process.communicate(timeout=60)
        assert process.returncode == 1, (options, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (options, err)
        assert "no answer" not in lines[0] and "Traceback" not in err
