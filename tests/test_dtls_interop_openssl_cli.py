"""Interop with the ``openssl s_server/s_client -dtls1_2`` binaries over UDP loopback.

Our side runs in process through the asyncio adapter for the cipher-suite and
group matrix, and as ``python -m dtls`` for the CLI end-to-end tests.  Every
test skips, saying why, when no ``openssl`` binary is available.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from dtls_helpers import (
    CERT_SUITES,
    OPENSSL_CIPHER,
    OPENSSL_GROUP_REPORTED,
    Pki,
    certificate_kind,
    make_pki,
    openssl_groups,
    pem_chain,
    pem_key,
)
from dtls_processes import (
    OPENSSL,
    PIPE,
    STEP_SECONDS,
    Process,
    dtls_cli,
    free_udp_port,
    openssl,
    read_until,
)

import dtls.asyncio as dtls_asyncio
from dtls.config import (
    CertificatePrivateKey,
    DTLSConfiguration,
    load_certificate_chain,
    load_private_key,
)
from dtls.suites import CipherSuite, NamedGroup, SrtpProfile

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="no openssl binary on this machine")

PSK_HEX = "00112233445566778899aabbccddeeff"
#: s_client options for a plain line pipe: no session dump, stdin lines are data (not
#: Q/R commands), and the end of stdin closes the connection.
S_CLIENT_LINES = ("-quiet", "-no_ign_eof", "-nocommands")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files of a CA and the certificates it issued; ``files[name]``, ``files[name.key]``."""
    directory = tmp_path_factory.mktemp("dtls-pki")
    pki: Pki = make_pki()
    out = {"ca": str(directory / "ca.pem"), "keylog": str(directory / "keys.log")}
    Path(out["ca"]).write_bytes(pem_chain((pki.ca_certificate,)))

    def save(name: str, chain: tuple[x509.Certificate, ...], key: CertificatePrivateKey) -> None:
        (directory / f"{name}.pem").write_bytes(pem_chain(chain))
        (directory / f"{name}.key").write_bytes(pem_key(key))
        out[name] = str(directory / f"{name}.pem")
        out[f"{name}.key"] = str(directory / f"{name}.key")

    for kind in ("p256", "p384", "rsa"):
        save(kind, *pki.issue("localhost", kind, sans=("127.0.0.1",)))
    save("other", *pki.issue("other.test", "rsa"))
    save("client", *pki.issue("client.test", "p256", client=True))
    return out


def _credentials(files: dict[str, str], name: str) -> list[str]:
    """openssl's ``-cert``/``-key`` options for the certificate ``name``."""
    return ["-cert", files[name], "-key", files[f"{name}.key"]]


def _cas(files: dict[str, str]) -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_pem_x509_certificates(Path(files["ca"]).read_bytes()))


def _server_config(files: dict[str, str], kind: str, **options: object) -> DTLSConfiguration:
    return DTLSConfiguration(
        is_client=False,
        certificate_chain=load_certificate_chain(Path(files[kind]).read_bytes()),
        private_key=load_private_key(Path(files[f"{kind}.key"]).read_bytes()),
        **options,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def _s_server(*arguments: str, naccept: int = 1) -> AsyncIterator[tuple[Process, int, bytes]]:
    """``openssl s_server`` on a free loopback port, once it says ACCEPT.

    Yields the process, its port and what it printed so far.
    """
    port = free_udp_port()
    async with openssl(
        "s_server", "-dtls1_2", "-accept", f"127.0.0.1:{port}", "-naccept", str(naccept), *arguments
    ) as server:
        assert server.stdout is not None and server.stdin is not None
        yield server, port, await read_until(server.stdout, b"ACCEPT")


def _s_client(port: int, *arguments: str) -> contextlib.AbstractAsyncContextManager[Process]:
    """``openssl s_client`` to our server on ``port``."""
    return openssl("s_client", "-dtls1_2", "-connect", f"127.0.0.1:{port}", *arguments)


@contextlib.asynccontextmanager
async def _cli_server(*arguments: str) -> AsyncIterator[tuple[Process, int]]:
    """``python -m dtls server`` on a free loopback port, once it says it listens."""
    port = free_udp_port()
    async with dtls_cli(
        "server", "--listen", f"127.0.0.1:{port}", *arguments, stderr=PIPE
    ) as server:
        assert server.stderr is not None
        await read_until(server.stderr, b"listening on")
        yield server, port


async def _with_s_server(
    server_arguments: list[str], configuration: DTLSConfiguration, *, label: str | None = None
) -> tuple[dtls_asyncio.AsyncDTLSConnection, bytes]:
    """Run s_server, connect our client, exchange a line each way, close; return s_server output."""
    if label:
        server_arguments = ["-keymatexport", label, "-keymatexportlen", "32", *server_arguments]
    async with _s_server(*server_arguments) as (server, port, output):
        assert server.stdout is not None and server.stdin is not None
        connection = await asyncio.wait_for(
            dtls_asyncio.connect("127.0.0.1", port, configuration), STEP_SECONDS
        )
        await connection.send(b"hello from python\n")
        output += await read_until(server.stdout, b"hello from python")
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
        async with _s_client(port, *S_CLIENT_LINES, *client_arguments) as client:
            assert client.stdout is not None and client.stdin is not None
            connection = await asyncio.wait_for(server.accept(), STEP_SECONDS)
            client.stdin.write(b"ping from openssl\n")
            await client.stdin.drain()
            data = await asyncio.wait_for(connection.recv(), STEP_SECONDS)
            assert data == b"ping from openssl\n"
            await connection.send(b"pong from python\n")
            output = await read_until(client.stdout, b"pong from python")
            client.stdin.close()
            assert await asyncio.wait_for(connection.recv(), STEP_SECONDS) == b""
            connection.close()
            output += await asyncio.wait_for(client.stdout.read(), STEP_SECONDS)
            return connection, output


@pytest.mark.parametrize("suite", CERT_SUITES)
def test_our_client_against_s_server_every_suite(files: dict[str, str], suite: CipherSuite) -> None:
    group = NamedGroup.x25519
    configuration = DTLSConfiguration(
        is_client=True,
        cipher_suites=(suite,),
        ca_certificates=_cas(files),
        server_name="localhost",
    )
    connection, output = asyncio.run(
        _with_s_server(
            [
                *_credentials(files, certificate_kind(suite, group)),
                "-groups",
                openssl_groups(suite, group),
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
    configuration = DTLSConfiguration(
        is_client=True, groups=(group,), ca_certificates=_cas(files), server_name="127.0.0.1"
    )
    _, output = asyncio.run(_with_s_server(_credentials(files, "rsa"), configuration))
    assert b"Shared groups: " + OPENSSL_GROUP_REPORTED[group].encode() in output


@pytest.mark.parametrize("suite", CERT_SUITES)
def test_s_client_against_our_server_every_suite(files: dict[str, str], suite: CipherSuite) -> None:
    configuration = _server_config(files, certificate_kind(suite, NamedGroup.x25519))
    connection, _ = asyncio.run(
        _with_s_client(
            ["-cipher", OPENSSL_CIPHER[suite], "-CAfile", files["ca"], "-verify_return_error"],
            configuration,
        )
    )
    assert connection.cipher_suite == suite.name


@pytest.mark.parametrize("group", list(NamedGroup))
def test_s_client_against_our_server_every_group(files: dict[str, str], group: NamedGroup) -> None:
    suite = CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    configuration = _server_config(files, certificate_kind(suite, group))
    connection, _ = asyncio.run(
        _with_s_client(["-groups", openssl_groups(suite, group)], configuration)
    )
    assert connection.connection.info.group == group


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
                *_credentials(files, "rsa"),
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
                *_credentials(files, "p256"),
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
    server_config = _server_config(
        files, "p256", ca_certificates=_cas(files), require_client_certificate=True
    )
    connection, _ = asyncio.run(_with_s_client(_credentials(files, "client"), server_config))
    assert connection.peer_certificates[0] == chain[0]


@pytest.mark.parametrize("tickets", [False, True])
def test_s_client_reconnect_resumes_with_our_server(files: dict[str, str], tickets: bool) -> None:
    async def run() -> bytes:
        async with dtls_asyncio.serve("127.0.0.1", 0, _server_config(files, "p256")) as server:
            _, port = server.local_address
            async with _s_client(
                port, "-reconnect", *(() if tickets else ("-no_ticket",))
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
        async with _s_server(*_credentials(files, "p256"), naccept=2) as (server, port, _):
            assert server.stdout is not None
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
            await read_until(server.stdout, b"Reused session-id")
            return flags

    assert asyncio.run(run()) == [False, True]


# --- the CLI itself ----------------------------------------------------------------------


def test_cli_server_echo_with_s_client(files: dict[str, str]) -> None:
    async def run() -> bytes:
        async with _cli_server(
            "--cert", files["p256"], "--key", files["p256.key"], "--echo", "--naccept", "1",
            "--alpn", "x,y",
        ) as (server, port):  # fmt: skip
            async with _s_client(
                port, *S_CLIENT_LINES, "-alpn", "y", "-CAfile", files["ca"], "-verify_return_error"
            ) as client:
                assert client.stdin is not None and client.stdout is not None
                client.stdin.write(b"echo me\n")
                await client.stdin.drain()
                seen = await read_until(client.stdout, b"echo me")
                client.stdin.close()
                await asyncio.wait_for(client.wait(), STEP_SECONDS)
                assert client.returncode == 0
            await asyncio.wait_for(server.wait(), STEP_SECONDS)
            assert server.returncode == 0
            return seen

    assert b"echo me" in asyncio.run(run())


def test_cli_client_with_s_server(files: dict[str, str]) -> None:
    async def run() -> tuple[int, bytes, bytes]:
        async with _s_server(*_credentials(files, "p384")) as (server, port, _):
            assert server.stdout is not None and server.stdin is not None
            async with dtls_cli(
                "client", f"127.0.0.1:{port}", "--keylog", files["keylog"],
                "--cafile", files["ca"], "--servername", "localhost",
                "--cipher", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                stdin=PIPE, stdout=PIPE, stderr=PIPE,
            ) as client:  # fmt: skip
                assert client.stdin is not None and client.stdout is not None
                client.stdin.write(b"first line\nsecond line\n")
                await client.stdin.drain()
                server_output = await read_until(server.stdout, b"second line")
                server.stdin.write(b"answer from s_server\n")
                await server.stdin.drain()
                client_output = await read_until(client.stdout, b"answer from s_server")
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
        async with _s_server(*_credentials(files, "p256")) as (_, port, _):
            async with dtls_cli(
                "client", f"127.0.0.1:{port}", "--servername", "localhost",
                stdin=asyncio.subprocess.DEVNULL, stderr=PIPE,
            ) as client:  # fmt: skip
                _, error = await asyncio.wait_for(client.communicate(), STEP_SECONDS)
                assert client.returncode is not None
                return client.returncode, error

    code, error = asyncio.run(run())
    assert code == 1
    assert b"failed: bad_certificate: no trust anchor issued" in error
    assert error.count(b"\n") == 1 and b"Traceback" not in error


def test_default_openssl_req_x509_certificate_pinned_as_trust_anchor(tmp_path: Path) -> None:
    """Issue 9: a plain ``openssl req -x509`` certificate (CA:TRUE, no subjectAltName) given
    as the trust anchor was refused as a leaf; OpenSSL, GnuTLS, pion and Mbed TLS accept it."""
    import subprocess

    assert OPENSSL is not None
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", "/CN=localhost", "-days", "2",
         "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    anchors = load_certificate_chain(certificate.read_bytes())
    assert anchors[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    configuration = DTLSConfiguration(
        is_client=True, ca_certificates=anchors, server_name="localhost"
    )
    connection, output = asyncio.run(
        _with_s_server(["-cert", str(certificate), "-key", str(key)], configuration)
    )
    assert connection.peer_certificates == anchors
    assert b"hello from python" in output


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
                async with _s_client(proxy_port, *S_CLIENT_LINES) as client:
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
        async with _cli_server(
            "--cert", files["p256"], "--key", files["p256.key"],
            "--sni", f"other.test={files['other']},{files['other.key']}",
            "--echo", "--naccept", "1",
        ) as (server, port):  # fmt: skip
            async with _s_client(
                port, "-servername", "other.test", "-verify_hostname", "other.test",
                "-CAfile", files["ca"], "-verify_return_error", "-no_ign_eof", "-nocommands",
            ) as client:  # fmt: skip
                assert client.stdin is not None and client.stdout is not None
                seen = await read_until(client.stdout, b"Verify return code")
                client.stdin.write(b"sni echo\n")
                await client.stdin.drain()
                seen += await read_until(client.stdout, b"sni echo")
                client.stdin.close()
                await asyncio.wait_for(client.wait(), STEP_SECONDS)
            await asyncio.wait_for(server.wait(), STEP_SECONDS)
            return seen

    output = asyncio.run(run())
    assert b"CN = other.test" in output
    assert b"Verify return code: 0 (ok)" in output


def test_cli_client_saves_and_resumes_session_with_s_server(
    files: dict[str, str], tmp_path: Path
) -> None:
    saved = tmp_path / "session.bin"

    async def run() -> tuple[list[bytes], bytes]:
        async with _s_server(*_credentials(files, "p256"), naccept=2) as (server, port, output):
            assert server.stdout is not None
            errors = []
            for option in ("--sess-out", "--sess-in"):
                async with dtls_cli(
                    "client", f"127.0.0.1:{port}", "--insecure", option, str(saved),
                    stdin=PIPE, stderr=PIPE,
                ) as client:  # fmt: skip
                    _, error = await asyncio.wait_for(client.communicate(b"hi\n"), STEP_SECONDS)
                    assert client.returncode == 0, error
                    errors.append(error)
            output += await asyncio.wait_for(server.stdout.read(), STEP_SECONDS)
            return errors, output

    errors, output = asyncio.run(run())
    assert b", new session" in errors[0]
    assert b", resumed" in errors[1]
    assert b"Reused session-id" in output
