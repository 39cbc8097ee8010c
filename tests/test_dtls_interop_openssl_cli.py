"""Interop with the ``openssl s_server/s_client -dtls1_2`` binaries over UDP loopback.

Our side runs in process through the asyncio adapter for the cipher-suite and
group matrix, and as ``python -m dtls`` for the CLI end-to-end tests.  Every
test skips, saying why, when no ``openssl`` binary is available.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dtls_helpers import Pki, make_pki, pem_chain, pem_key

import dtls.asyncio as dtls_asyncio
from dtls.config import DTLSConfiguration
from dtls.suites import CipherSuite, NamedGroup, SrtpProfile

OPENSSL = shutil.which("openssl") or (
    "/usr/bin/openssl" if Path("/usr/bin/openssl").exists() else None
)
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="no openssl binary on this machine")

STEP_SECONDS = 15
REPO = Path(__file__).resolve().parent.parent

OPENSSL_CIPHER = {
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: "ECDHE-ECDSA-AES128-GCM-SHA256",
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: "ECDHE-ECDSA-AES256-GCM-SHA384",
    CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: "ECDHE-ECDSA-CHACHA20-POLY1305",
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: "ECDHE-RSA-AES128-GCM-SHA256",
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: "ECDHE-RSA-AES256-GCM-SHA384",
    CipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: "ECDHE-RSA-CHACHA20-POLY1305",
    CipherSuite.TLS_PSK_WITH_AES_128_GCM_SHA256: "PSK-AES128-GCM-SHA256",
    CipherSuite.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256: "ECDHE-PSK-CHACHA20-POLY1305",
}
OPENSSL_GROUP = {
    NamedGroup.x25519: "X25519",
    NamedGroup.secp256r1: "P-256",
    NamedGroup.secp384r1: "P-384",
}
PSK_HEX = "00112233445566778899aabbccddeeff"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("dtls-pki")
    pki: Pki = make_pki()
    out = {"ca": str(directory / "ca.pem"), "keylog": str(directory / "keys.log")}
    Path(out["ca"]).write_bytes(pem_chain((pki.ca_certificate,)))
    for kind in ("p256", "p384", "rsa"):
        chain, key = pki.issue("localhost", kind, sans=("127.0.0.1",))
        (directory / f"{kind}.pem").write_bytes(pem_chain(chain))
        (directory / f"{kind}.key").write_bytes(pem_key(key))
        out[kind] = str(directory / f"{kind}.pem")
        out[f"{kind}.key"] = str(directory / f"{kind}.key")
    chain, key = pki.issue("other.test", "rsa")
    (directory / "other.pem").write_bytes(pem_chain(chain))
    (directory / "other.key").write_bytes(pem_key(key))
    out["other"] = str(directory / "other.pem")
    out["other.key"] = str(directory / "other.key")
    chain, key = pki.issue("client.test", "p256", client=True)
    (directory / "client.pem").write_bytes(pem_chain(chain))
    (directory / "client.key").write_bytes(pem_key(key))
    out["client"] = str(directory / "client.pem")
    out["client.key"] = str(directory / "client.key")
    return out


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _kind_for(suite: CipherSuite, group: NamedGroup) -> str:
    if "RSA" in suite.name:
        return "rsa"
    return "p384" if group == NamedGroup.secp384r1 else "p256"


def _groups_for(suite: CipherSuite, group: NamedGroup) -> str:
    name = OPENSSL_GROUP[group]
    if "ECDSA" in suite.name and group == NamedGroup.x25519:
        name += ":P-256"  # OpenSSL wants the certificate's curve among the groups
    return name


async def _read_until(stream: asyncio.StreamReader, needle: bytes) -> bytes:
    seen = b""
    while needle not in seen:
        line = await asyncio.wait_for(stream.readline(), STEP_SECONDS)
        if not line:
            raise AssertionError(f"stream ended before {needle!r}; saw {seen[-2000:]!r}")
        seen += line
    return seen


@contextlib.asynccontextmanager
async def _openssl(*arguments: str) -> AsyncIterator[asyncio.subprocess.Process]:
    assert OPENSSL is not None
    process = await asyncio.create_subprocess_exec(
        OPENSSL,
        *arguments,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _with_s_server(
    server_arguments: list[str], configuration: DTLSConfiguration, *, label: str | None = None
) -> tuple[dtls_asyncio.AsyncDTLSConnection, bytes]:
    """Run s_server, connect our client, exchange a line each way, close; return s_server output."""
    port = _free_port()
    arguments = ["s_server", "-dtls1_2", "-accept", f"127.0.0.1:{port}", "-naccept", "1"]
    if label:
        arguments += ["-keymatexport", label, "-keymatexportlen", "32"]
    async with _openssl(*arguments, *server_arguments) as server:
        assert server.stdout is not None and server.stdin is not None
        output = await _read_until(server.stdout, b"ACCEPT")
        connection = await asyncio.wait_for(
            dtls_asyncio.connect("127.0.0.1", port, configuration), STEP_SECONDS
        )
        await connection.send(b"hello from python\n")
        output += await _read_until(server.stdout, b"hello from python")
        server.stdin.write(b"hello from openssl\n")
        await server.stdin.drain()
        assert await asyncio.wait_for(connection.recv(), STEP_SECONDS) == b"hello from openssl\n"
        connection.shutdown(read=False, write=True)
        assert await asyncio.wait_for(connection.recv(), STEP_SECONDS) == b""
        output += await asyncio.wait_for(server.stdout.read(), STEP_SECONDS)
        await connection.__aexit__(None, None, None)
        return connection, output


async def _with_s_client(
    client_arguments: list[str], configuration: DTLSConfiguration, *, connection_id_bytes: int = 0
) -> tuple[dtls_asyncio.AsyncDTLSConnection, bytes]:
    """Serve in process, run s_client against us, echo a line, let s_client close."""
    async with dtls_asyncio.serve(
        "127.0.0.1", 0, configuration, connection_id_bytes=connection_id_bytes
    ) as server:
        _, port = server.local_address
        async with _openssl(
            "s_client",
            "-dtls1_2",
            "-connect",
            f"127.0.0.1:{port}",
            "-quiet",
            "-no_ign_eof",
            "-nocommands",
            *client_arguments,
        ) as client:
            assert client.stdout is not None and client.stdin is not None
            connection = await asyncio.wait_for(server.accept(), STEP_SECONDS)
            client.stdin.write(b"ping from openssl\n")
            await client.stdin.drain()
            data = await asyncio.wait_for(connection.recv(), STEP_SECONDS)
            assert data == b"ping from openssl\n"
            await connection.send(b"pong from python\n")
            output = await _read_until(client.stdout, b"pong from python")
            client.stdin.close()
            assert await asyncio.wait_for(connection.recv(), STEP_SECONDS) == b""
            connection.close()
            output += await asyncio.wait_for(client.stdout.read(), STEP_SECONDS)
            return connection, output


CERT_SUITES = [s for s in OPENSSL_CIPHER if "PSK" not in s.name]


@pytest.mark.parametrize("suite", CERT_SUITES)
def test_our_client_against_s_server_every_suite(files: dict[str, str], suite: CipherSuite) -> None:
    group = NamedGroup.x25519
    kind = _kind_for(suite, group)
    configuration = DTLSConfiguration(
        is_client=True,
        cipher_suites=(suite,),
        ca_certificates=_cas(files),
        server_name="localhost",
    )
    connection, output = asyncio.run(
        _with_s_server(
            [
                "-cert",
                files[kind],
                "-key",
                files[f"{kind}.key"],
                "-groups",
                _groups_for(suite, group),
            ],
            configuration,
        )
    )
    assert connection.cipher_suite == suite.name
    assert b"CIPHER is " + OPENSSL_CIPHER[suite].encode() in output


@pytest.mark.parametrize("group", list(NamedGroup))
def test_our_client_against_s_server_every_group(files: dict[str, str], group: NamedGroup) -> None:
    # An RSA certificate, so that offering one group alone does not clash with an ECDSA
    # certificate's curve (OpenSSL requires that curve among the offered groups).
    kind = "rsa"
    configuration = DTLSConfiguration(
        is_client=True, groups=(group,), ca_certificates=_cas(files), server_name="127.0.0.1"
    )
    _, output = asyncio.run(
        _with_s_server(["-cert", files[kind], "-key", files[f"{kind}.key"]], configuration)
    )
    assert b"Shared groups: " + OPENSSL_GROUP_LOWER[group] in output


OPENSSL_GROUP_LOWER = {
    NamedGroup.x25519: b"x25519",
    NamedGroup.secp256r1: b"secp256r1",
    NamedGroup.secp384r1: b"secp384r1",
}


@pytest.mark.parametrize("suite", CERT_SUITES)
def test_s_client_against_our_server_every_suite(files: dict[str, str], suite: CipherSuite) -> None:
    kind = _kind_for(suite, NamedGroup.x25519)
    configuration = _server_config(files, kind)
    connection, _ = asyncio.run(
        _with_s_client(
            ["-cipher", OPENSSL_CIPHER[suite], "-CAfile", files["ca"], "-verify_return_error"],
            configuration,
        )
    )
    assert connection.cipher_suite == suite.name


@pytest.mark.parametrize("group", list(NamedGroup))
def test_s_client_against_our_server_every_group(files: dict[str, str], group: NamedGroup) -> None:
    kind = _kind_for(CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, group)
    groups = OPENSSL_GROUP[group] + (":P-256" if group == NamedGroup.x25519 else "")
    connection, _ = asyncio.run(_with_s_client(["-groups", groups], _server_config(files, kind)))
    assert connection.connection._key_share is not None
    assert connection.connection._key_share.group == group


@pytest.mark.parametrize(
    "suite",
    [
        CipherSuite.TLS_PSK_WITH_AES_128_GCM_SHA256,
        CipherSuite.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
    ],
)
def test_psk_both_directions(suite: CipherSuite) -> None:
    key = bytes.fromhex(PSK_HEX)
    client_config = DTLSConfiguration(
        is_client=True, psk=key, psk_identity=b"Client_identity", cipher_suites=(suite,)
    )
    connection, output = asyncio.run(
        _with_s_server(
            ["-psk", PSK_HEX, "-nocert", "-cipher", OPENSSL_CIPHER[suite]], client_config
        )
    )
    assert connection.cipher_suite == suite.name
    server_config = DTLSConfiguration(
        is_client=False, psk_lookup=lambda identity: key, cipher_suites=(suite,)
    )
    connection, _ = asyncio.run(
        _with_s_client(["-psk", PSK_HEX, "-cipher", OPENSSL_CIPHER[suite]], server_config)
    )
    assert connection.cipher_suite == suite.name
    assert connection.connection.psk_identity == b"Client_identity"


def test_hello_verify_request_alpn_srtp_exporter_small_mtu(files: dict[str, str]) -> None:
    """s_server -listen forces the cookie exchange; -mtu 300 fragments its flight."""
    label = "EXTRACTOR-dtls_srtp"
    configuration = DTLSConfiguration(
        is_client=True,
        ca_certificates=_cas(files),
        server_name="localhost",
        alpn_protocols=("webrtc", "h2"),
        srtp_profiles=(SrtpProfile.SRTP_AES128_CM_SHA1_80,),
        mtu=300,
    )

    async def run() -> tuple[bytes, bytes]:
        connection, output = await _with_s_server(
            [
                "-cert",
                files["rsa"],
                "-key",
                files["rsa.key"],
                "-listen",
                "-mtu",
                "300",
                "-alpn",
                "h2",
                "-use_srtp",
                "SRTP_AES128_CM_SHA1_80",
            ],
            configuration,
            label=label,
        )
        assert connection.alpn_protocol == "h2"
        assert connection.srtp_profile is SrtpProfile.SRTP_AES128_CM_SHA1_80
        return connection.export_keying_material(label, None, 32), output

    ours, output = asyncio.run(run())
    assert b"Keying material: " + ours.hex().upper().encode() in output


def test_mutual_authentication_both_directions(files: dict[str, str]) -> None:
    from dtls.config import load_certificate_chain, load_private_key

    chain = load_certificate_chain(Path(files["client"]).read_bytes())
    key = load_private_key(Path(files["client.key"]).read_bytes())
    client_config = DTLSConfiguration(
        is_client=True,
        ca_certificates=_cas(files),
        server_name="localhost",
        certificate_chain=chain,
        private_key=key,
    )
    _, output = asyncio.run(
        _with_s_server(
            [
                "-cert",
                files["p256"],
                "-key",
                files["p256.key"],
                "-Verify",
                "1",
                "-CAfile",
                files["ca"],
                "-verify_return_error",
            ],
            client_config,
        )
    )
    assert b"client.test" in output
    server_config = DTLSConfiguration(
        is_client=False,
        certificate_chain=load_certificate_chain(Path(files["p256"]).read_bytes()),
        private_key=load_private_key(Path(files["p256.key"]).read_bytes()),
        ca_certificates=_cas(files),
        require_client_certificate=True,
    )
    connection, _ = asyncio.run(
        _with_s_client(["-cert", files["client"], "-key", files["client.key"]], server_config)
    )
    assert connection.peer_certificates[0] == chain[0]


@pytest.mark.parametrize("tickets", [False, True])
def test_s_client_reconnect_resumes_with_our_server(files: dict[str, str], tickets: bool) -> None:
    async def run() -> bytes:
        async with dtls_asyncio.serve("127.0.0.1", 0, _server_config(files, "p256")) as server:
            _, port = server.local_address
            async with _openssl(
                "s_client",
                "-dtls1_2",
                "-connect",
                f"127.0.0.1:{port}",
                "-reconnect",
                *(() if tickets else ("-no_ticket",)),
            ) as client:
                assert client.stdout is not None and client.stdin is not None
                resumed = []
                for _ in range(6):
                    connection = await asyncio.wait_for(server.accept(), STEP_SECONDS)
                    resumed.append(connection.connection.session_resumed)
                assert resumed == [False] + [True] * 5
                client.stdin.close()
                return await asyncio.wait_for(client.stdout.read(), STEP_SECONDS)

    output = asyncio.run(run())
    assert output.count(b"Reused, ") >= 5


def test_our_client_resumes_with_s_server(files: dict[str, str]) -> None:
    async def run() -> list[bool]:
        port = _free_port()
        async with _openssl(
            "s_server",
            "-dtls1_2",
            "-accept",
            f"127.0.0.1:{port}",
            "-naccept",
            "2",
            "-cert",
            files["p256"],
            "-key",
            files["p256.key"],
        ) as server:
            assert server.stdout is not None
            await _read_until(server.stdout, b"ACCEPT")
            configuration = DTLSConfiguration(is_client=True, verify_peer=False)
            flags = []
            for _ in range(2):
                connection = await asyncio.wait_for(
                    dtls_asyncio.connect("127.0.0.1", port, configuration), STEP_SECONDS
                )
                flags.append(connection.connection.session_resumed)
                configuration = DTLSConfiguration(
                    is_client=True, verify_peer=False, session=connection.connection.session
                )
                connection.close()
                await connection.__aexit__(None, None, None)
            await _read_until(server.stdout, b"Reused session-id")
            return flags

    assert asyncio.run(run()) == [False, True]


# --- the CLI itself ----------------------------------------------------------------------


def _cli(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "dtls", *arguments]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_cli_server_echo_with_s_client(files: dict[str, str]) -> None:
    async def run() -> bytes:
        port = _free_port()
        server = await asyncio.create_subprocess_exec(
            *_cli(
                "server",
                "--listen",
                f"127.0.0.1:{port}",
                "--cert",
                files["p256"],
                "--key",
                files["p256.key"],
                "--echo",
                "--naccept",
                "1",
                "--alpn",
                "x,y",
            ),
            stderr=asyncio.subprocess.PIPE,
            env=_env(),
        )
        try:
            assert server.stderr is not None
            await _read_until(server.stderr, b"listening on")
            async with _openssl(
                "s_client",
                "-dtls1_2",
                "-connect",
                f"127.0.0.1:{port}",
                "-quiet",
                "-no_ign_eof",
                "-nocommands",
                "-alpn",
                "y",
                "-CAfile",
                files["ca"],
                "-verify_return_error",
            ) as client:
                assert client.stdin is not None and client.stdout is not None
                client.stdin.write(b"echo me\n")
                await client.stdin.drain()
                seen = await _read_until(client.stdout, b"echo me")
                client.stdin.close()
                await asyncio.wait_for(client.wait(), STEP_SECONDS)
                assert client.returncode == 0
            await asyncio.wait_for(server.wait(), STEP_SECONDS)
            assert server.returncode == 0
            return seen
        finally:
            if server.returncode is None:
                server.kill()
                await server.wait()

    assert b"echo me" in asyncio.run(run())


def test_cli_client_with_s_server(files: dict[str, str]) -> None:
    async def run() -> tuple[int, bytes, bytes]:
        port = _free_port()
        async with _openssl(
            "s_server",
            "-dtls1_2",
            "-accept",
            f"127.0.0.1:{port}",
            "-naccept",
            "1",
            "-cert",
            files["p384"],
            "-key",
            files["p384.key"],
        ) as server:
            assert server.stdout is not None and server.stdin is not None
            await _read_until(server.stdout, b"ACCEPT")
            client = await asyncio.create_subprocess_exec(
                *_cli(
                    "client",
                    f"127.0.0.1:{port}",
                    "--keylog",
                    files["keylog"],
                    "--cafile",
                    files["ca"],
                    "--servername",
                    "localhost",
                    "--cipher",
                    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                ),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=_env(),
            )
            assert client.stdin is not None and client.stdout is not None
            client.stdin.write(b"first line\nsecond line\n")
            await client.stdin.drain()
            server_output = await _read_until(server.stdout, b"second line")
            server.stdin.write(b"answer from s_server\n")
            await server.stdin.drain()
            client_output = await _read_until(client.stdout, b"answer from s_server")
            client.stdin.close()
            await asyncio.wait_for(client.wait(), STEP_SECONDS)
            server_output += await asyncio.wait_for(server.stdout.read(), STEP_SECONDS)
            assert client.returncode is not None
            return client.returncode, client_output, server_output

    code, client_output, server_output = asyncio.run(run())
    assert code == 0
    assert b"answer from s_server" in client_output
    assert b"CIPHER is ECDHE-ECDSA-AES256-GCM-SHA384" in server_output
    assert b"first line\nsecond line" in server_output
    assert b"CONNECTION CLOSED" in server_output  # our close_notify arrived
    assert Path(files["keylog"]).read_text().startswith("CLIENT_RANDOM ")


def test_cli_client_rejects_untrusted_server(files: dict[str, str]) -> None:
    async def run() -> tuple[int, bytes]:
        port = _free_port()
        async with _openssl(
            "s_server",
            "-dtls1_2",
            "-accept",
            f"127.0.0.1:{port}",
            "-naccept",
            "1",
            "-cert",
            files["p256"],
            "-key",
            files["p256.key"],
        ) as server:
            assert server.stdout is not None
            await _read_until(server.stdout, b"ACCEPT")
            client = await asyncio.create_subprocess_exec(
                *_cli("client", f"127.0.0.1:{port}", "--servername", "localhost"),
                stdin=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=_env(),
            )
            _, error = await asyncio.wait_for(client.communicate(), STEP_SECONDS)
            assert client.returncode is not None
            return client.returncode, error

    code, error = asyncio.run(run())
    assert code == 1
    assert b"handshake failed" in error


def _cas(files: dict[str, str]) -> tuple[object, ...]:
    from cryptography import x509

    return tuple(x509.load_pem_x509_certificates(Path(files["ca"]).read_bytes()))


def _server_config(files: dict[str, str], kind: str) -> DTLSConfiguration:
    from dtls.config import load_certificate_chain, load_private_key

    return DTLSConfiguration(
        is_client=False,
        certificate_chain=load_certificate_chain(Path(files[kind]).read_bytes()),
        private_key=load_private_key(Path(files[f"{kind}.key"]).read_bytes()),
    )


class _DroppingProxy(asyncio.DatagramProtocol):
    """UDP relay between one client and a server that loses chosen datagrams.

    ``drop_to_server`` / ``drop_to_client`` hold 1-based indices of datagrams to lose in
    each direction, so whole flights can vanish on the way.
    """

    def __init__(self, server: tuple[str, int], to_server: set[int], to_client: set[int]) -> None:
        self.server = server
        self.drop_to_server = to_server
        self.drop_to_client = to_client
        self.client: tuple[str, int] | None = None
        self.counts = {"to_server": 0, "to_client": 0}
        self.dropped: list[tuple[str, int]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr == self.server:
            direction, destination, drops = "to_client", self.client, self.drop_to_client
        else:
            self.client = addr
            direction, destination, drops = "to_server", self.server, self.drop_to_server
        self.counts[direction] += 1
        if self.counts[direction] in drops:
            self.dropped.append((direction, self.counts[direction]))
            return
        if destination is not None:
            self.transport.sendto(data, destination)


def test_whole_flights_dropped_between_s_client_and_our_server(files: dict[str, str]) -> None:
    """Lose our first ServerHello flight and a later client flight; timers on both sides heal.

    The third client datagram is either s_client repeating its hello or its first flight 5,
    depending on whose 1 s timer fires first; either way the handshake must complete.
    """

    async def run() -> _DroppingProxy:
        async with dtls_asyncio.serve("127.0.0.1", 0, _server_config(files, "rsa")) as server:
            loop = asyncio.get_running_loop()
            # to_client: 1 = HelloVerifyRequest, 2 = our first flight 4 (one datagram);
            # to_server: 1 = hello, 2 = hello with cookie, 3 = whatever comes next.
            _, proxy = await loop.create_datagram_endpoint(
                lambda: _DroppingProxy(server.local_address, {3}, {2}),
                local_addr=("127.0.0.1", 0),
            )
            assert proxy.transport is not None
            _, proxy_port = proxy.transport.get_extra_info("sockname")
            try:
                async with _openssl(
                    "s_client",
                    "-dtls1_2",
                    "-connect",
                    f"127.0.0.1:{proxy_port}",
                    "-quiet",
                    "-no_ign_eof",
                    "-nocommands",
                ) as client:
                    assert client.stdin is not None and client.stdout is not None
                    connection = await asyncio.wait_for(server.accept(), STEP_SECONDS)
                    client.stdin.write(b"made it\n")
                    await client.stdin.drain()
                    assert await asyncio.wait_for(connection.recv(), STEP_SECONDS) == b"made it\n"
                    client.stdin.close()
                    assert await asyncio.wait_for(connection.recv(), STEP_SECONDS) == b""
            finally:
                proxy.transport.close()
            return proxy

    proxy = asyncio.run(run())
    assert proxy.dropped == [("to_client", 2), ("to_server", 3)]


def test_cli_server_sni_certificate_with_s_client(files: dict[str, str]) -> None:
    async def run() -> bytes:
        port = _free_port()
        server = await asyncio.create_subprocess_exec(
            *_cli(
                "server",
                "--listen",
                f"127.0.0.1:{port}",
                "--cert",
                files["p256"],
                "--key",
                files["p256.key"],
                "--sni",
                f"other.test={files['other']},{files['other.key']}",
                "--echo",
                "--naccept",
                "1",
            ),
            stderr=asyncio.subprocess.PIPE,
            env=_env(),
        )
        try:
            assert server.stderr is not None
            await _read_until(server.stderr, b"listening on")
            async with _openssl(
                "s_client",
                "-dtls1_2",
                "-connect",
                f"127.0.0.1:{port}",
                "-servername",
                "other.test",
                "-verify_hostname",
                "other.test",
                "-CAfile",
                files["ca"],
                "-verify_return_error",
                "-no_ign_eof",
                "-nocommands",
            ) as client:
                assert client.stdin is not None and client.stdout is not None
                seen = await _read_until(client.stdout, b"Verify return code")
                client.stdin.write(b"sni echo\n")
                await client.stdin.drain()
                seen += await _read_until(client.stdout, b"sni echo")
                client.stdin.close()
                await asyncio.wait_for(client.wait(), STEP_SECONDS)
            await asyncio.wait_for(server.wait(), STEP_SECONDS)
            return seen
        finally:
            if server.returncode is None:
                server.kill()
                await server.wait()

    output = asyncio.run(run())
    assert b"CN = other.test" in output
    assert b"Verify return code: 0 (ok)" in output


def test_cli_client_saves_and_resumes_session_with_s_server(
    files: dict[str, str], tmp_path: Path
) -> None:
    saved = tmp_path / "session.bin"

    async def run() -> tuple[list[bytes], bytes]:
        port = _free_port()
        async with _openssl(
            "s_server",
            "-dtls1_2",
            "-accept",
            f"127.0.0.1:{port}",
            "-naccept",
            "2",
            "-cert",
            files["p256"],
            "-key",
            files["p256.key"],
        ) as server:
            assert server.stdout is not None
            output = await _read_until(server.stdout, b"ACCEPT")
            errors = []
            for option in ("--sess-out", "--sess-in"):
                client = await asyncio.create_subprocess_exec(
                    *_cli("client", f"127.0.0.1:{port}", "--insecure", option, str(saved)),
                    stdin=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=_env(),
                )
                _, error = await asyncio.wait_for(client.communicate(b"hi\n"), STEP_SECONDS)
                assert client.returncode == 0, error
                errors.append(error)
            output += await asyncio.wait_for(server.stdout.read(), STEP_SECONDS)
            return errors, output

    errors, output = asyncio.run(run())
    assert b"(resumed)" not in errors[0]
    assert b"(resumed)" in errors[1]
    assert b"Reused session-id" in output
