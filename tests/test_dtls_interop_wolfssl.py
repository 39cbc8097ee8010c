"""Interop with wolfSSL's example client and server (built from Debian's source) over UDP.

Our side runs in process through the asyncio adapter; wolfSSL runs as its
example programs (see ``wolfssl_peer.py``).  Every test skips, saying why,
only when wolfSSL cannot be built on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from pathlib import Path

import pytest
from cryptography import x509
from dtls_helpers import DTLS_1_2_ONLY, Pki, make_pki, pem_chain, pem_key
from dtls_processes import STEP_SECONDS
from wolfssl_peer import (
    DropRule,
    WolfSSL,
    dropping_relay,
    wolfssl,
    wolfssl_client,
    wolfssl_server,
)

import dtls.asyncio as dtls_asyncio
from dtls.config import (
    CertificatePrivateKey,
    DTLSConfiguration,
    load_certificate_chain,
    load_private_key,
)
from dtls.sessions13 import Session13
from dtls.suites import CipherSuite, NamedGroup

__all__ = ["wolfssl"]  # the fixture, imported so pytest finds it

HELLO = b"hello wolfssl!"
RESUMED_HELLO = b"resuming wolfssl!"  # what its client says on a resumed connection
REPLY = b"I hear you fa shizzle!"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files of a CA and the certificates it issued; ``files[name]``, ``files[name.key]``."""
    directory = tmp_path_factory.mktemp("wolfssl-pki")
    pki: Pki = make_pki()
    out = {"ca": str(directory / "ca.pem")}
    Path(out["ca"]).write_bytes(pem_chain((pki.ca_certificate,)))

    def save(name: str, chain: tuple[x509.Certificate, ...], key: CertificatePrivateKey) -> None:
        (directory / f"{name}.pem").write_bytes(pem_chain(chain))
        (directory / f"{name}.key").write_bytes(pem_key(key))
        out[name] = str(directory / f"{name}.pem")
        out[f"{name}.key"] = str(directory / f"{name}.key")

    save("server", *pki.issue("localhost", "p256", sans=("127.0.0.1",)))
    save("client", *pki.issue("client.test", "p256", client=True))
    return out


def _cas(files: dict[str, str]) -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_pem_x509_certificates(Path(files["ca"]).read_bytes()))


def _server_config(files: dict[str, str], **options: object) -> DTLSConfiguration:
    return DTLSConfiguration(
        is_client=False,
        certificate_chain=load_certificate_chain(Path(files["server"]).read_bytes()),
        private_key=load_private_key(Path(files["server.key"]).read_bytes()),
        **options,  # type: ignore[arg-type]
    )


def _client_config(files: dict[str, str], **options: object) -> DTLSConfiguration:
    return DTLSConfiguration(
        is_client=True,
        ca_certificates=_cas(files),
        server_name="localhost",
        **options,  # type: ignore[arg-type]
    )


def _wolfssl_credentials(files: dict[str, str]) -> list[str]:
    """wolfSSL's own certificate and key, and our CA as its trust anchor."""
    return ["-c", files["client"], "-k", files["client.key"], "-A", files["ca"]]


async def _wolfssl_client_against_us(
    wolfssl: WolfSSL,
    configuration: DTLSConfiguration,
    arguments: list[str],
    *,
    connection_id_bytes: int = 0,
    connections: int = 1,
    drop: DropRule | None = None,
) -> tuple[list[dtls_asyncio.AsyncDTLSConnection], str]:
    """Serve in process; wolfSSL's client says hello, we answer (per connection).

    ``connections`` is 2 when wolfSSL resumes (``-r``); ``drop`` puts a relay
    between the two that drops what it says.  Returns our connections and
    wolfSSL's output.
    """
    async with dtls_asyncio.serve(
        "127.0.0.1", 0, configuration, connection_id_bytes=connection_id_bytes
    ) as server:
        _, port = server.local_address
        async with contextlib.AsyncExitStack() as stack:
            if drop is not None:
                port, _dropped = await stack.enter_async_context(dropping_relay(port, drop))
            client = await stack.enter_async_context(wolfssl_client(wolfssl, port, *arguments))
            accepted = []
            for _ in range(connections):
                connection = await asyncio.wait_for(server.accept(), STEP_SECONDS)
                accepted.append(connection)
                data = await asyncio.wait_for(connection.recv(), STEP_SECONDS)
                assert data.rstrip(b"\0\n") in (HELLO, RESUMED_HELLO), client.errors()
                await connection.send(REPLY)
            output = await client.output()
            assert client.process.returncode == 0, output + client.errors()
            return accepted, output


async def _ping(connection: dtls_asyncio.AsyncDTLSConnection) -> bytes:
    """Send a line until it comes back: a datagram may be lost like any other.

    (In DTLS 1.3 the client sends data right after its Finished; if that flight
    is lost, the server cannot read the data yet, and wolfSSL drops it.)
    """
    for _ in range(STEP_SECONDS * 2):
        await connection.send(b"ping from python\n")
        try:
            return await asyncio.wait_for(connection.recv(), 0.5)
        except TimeoutError:
            continue
    raise AssertionError("no echo")


async def _our_client_against_wolfssl(
    wolfssl: WolfSSL,
    configuration: DTLSConfiguration,
    arguments: list[str],
    *,
    connections: int = 1,
    drop: DropRule | None = None,
) -> tuple[list[dtls_asyncio.AsyncDTLSConnection], str]:
    """wolfSSL's echo server; we send a line, read it back, close; return its output.

    With ``connections`` > 1 each connection offers the session of the one before.
    """
    extra = ["-C", str(connections)] if connections > 1 else []
    async with wolfssl_server(wolfssl, "-e", *extra, *arguments) as server:
        port = server.port
        async with contextlib.AsyncExitStack() as stack:
            if drop is not None:
                port, _dropped = await stack.enter_async_context(dropping_relay(port, drop))
            done = []
            for _ in range(connections):
                connection = await asyncio.wait_for(
                    dtls_asyncio.connect("127.0.0.1", port, configuration), STEP_SECONDS
                )
                echoed = await _ping(connection)
                assert echoed == b"ping from python\n", server.errors()
                await asyncio.sleep(0.05)  # let a ticket that follows the handshake arrive
                session = connection.connection.session
                connection.close()
                await connection.__aexit__(None, None, None)
                done.append(connection)
                configuration = dataclasses.replace(configuration, session=session)
            output = await server.output()
            return done, output


# --------------------------------------------------------------------------- DTLS 1.2


def test_wolfssl_12_client_against_our_server(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    (connection,), output = asyncio.run(
        _wolfssl_client_against_us(
            wolfssl,
            _server_config(files, versions=DTLS_1_2_ONLY),
            ["-v", "3", *_wolfssl_credentials(files)],
        )
    )
    assert "SSL version is DTLSv1.2" in output
    assert REPLY.decode() in output
    assert connection.negotiated_version == "DTLSv1.2"


def test_our_12_client_against_wolfssl_server(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    (connection,), output = asyncio.run(
        _our_client_against_wolfssl(
            wolfssl,
            _client_config(files, versions=DTLS_1_2_ONLY),
            ["-v", "3", *SERVER_FILES(files)],
        )
    )
    assert "SSL version is DTLSv1.2" in output
    assert connection.negotiated_version == "DTLSv1.2"


# --------------------------------------------------------------------------- DTLS 1.3


def SERVER_FILES(files: dict[str, str]) -> list[str]:  # noqa: N802 (reads like a constant)
    """wolfSSL server's certificate and key, and no client certificate demanded."""
    return ["-c", files["server"], "-k", files["server.key"], "-d"]


def _wolfssl_psk_key() -> bytes:
    """The 32-byte TLS 1.3 PSK of wolfSSL's example programs (identity Client_identity)."""
    key, value = [], 0x01
    for _ in range(32):
        if value >= 0x100:
            value = 0x01
        key.append(value)
        value += 0x22
    return bytes(key)


def _is_server_hello_flight(data: bytes) -> bool:
    """A server datagram that starts the 1.3 server flight (a plaintext ServerHello, not HRR)."""
    return (
        len(data) > 59
        and data[0] == 22
        and data[13] == 2
        and data[27:59]
        != bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
    )


class _DropFirstFlights:
    """Drops the first transmission of the server's flight, then of the client's last one.

    The server flight is every datagram from its first ServerHello until the
    ServerHello comes again (wolfSSL and we retransmit the whole unacknowledged
    flight); the client's last flight is its first burst of epoch-2 records.
    """

    def __init__(self) -> None:
        self.server_hellos = 0
        self.client_epoch2 = 0

    def __call__(self, direction: str, data: bytes) -> bool:
        if direction == "to_client":
            if _is_server_hello_flight(data):
                self.server_hellos += 1
            return self.server_hellos == 1
        if data[0] & 0b1110_0011 == 0b0010_0010:  # unified header, epoch bits 2
            self.client_epoch2 += 1
            return self.client_epoch2 == 1
        return False


def test_wolfssl_13_client_against_our_server(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    (connection,), output = asyncio.run(
        _wolfssl_client_against_us(
            wolfssl, _server_config(files), ["-v", "4", *_wolfssl_credentials(files)]
        )
    )
    assert "SSL version is DTLSv1.3" in output
    assert REPLY.decode() in output
    assert connection.negotiated_version == "DTLSv1.3"


def test_our_13_client_against_wolfssl_server(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    (connection,), output = asyncio.run(
        _our_client_against_wolfssl(
            wolfssl, _client_config(files), ["-v", "4", *SERVER_FILES(files)]
        )
    )
    assert "SSL version is DTLSv1.3" in output
    assert connection.negotiated_version == "DTLSv1.3"


@pytest.mark.parametrize(
    ("suite", "wolfssl_name"),
    [
        (CipherSuite.TLS_AES_256_GCM_SHA384, "TLS13-AES256-GCM-SHA384"),
        (CipherSuite.TLS_CHACHA20_POLY1305_SHA256, "TLS13-CHACHA20-POLY1305-SHA256"),
    ],
)
def test_13_suites_both_ways(
    wolfssl: WolfSSL, files: dict[str, str], suite: CipherSuite, wolfssl_name: str
) -> None:
    (ours,), output = asyncio.run(
        _wolfssl_client_against_us(
            wolfssl,
            _server_config(files),
            ["-v", "4", "-l", wolfssl_name, *_wolfssl_credentials(files)],
        )
    )
    assert ours.cipher_suite == suite.name and f"SSL cipher suite is {suite.name}" in output
    (ours,), output = asyncio.run(
        _our_client_against_wolfssl(
            wolfssl,
            _client_config(files, cipher_suites=(suite,)),
            ["-v", "4", *SERVER_FILES(files)],
        )
    )
    assert ours.cipher_suite == suite.name and f"SSL cipher suite is {suite.name}" in output


def test_connection_ids_both_ways(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    (ours,), output = asyncio.run(
        _wolfssl_client_against_us(
            wolfssl,
            _server_config(files),
            ["-v", "4", "--cid", "wc", *_wolfssl_credentials(files)],
            connection_id_bytes=8,
        )
    )
    assert "CID extension was negotiated" in output
    assert ours.connection.peer_connection_id == b"wc" and len(ours.connection_id) == 8
    (ours,), output = asyncio.run(
        _our_client_against_wolfssl(
            wolfssl,
            _client_config(files, connection_id=b"\x01\x02\x03\x04"),
            ["-v", "4", "--cid", "ws", *SERVER_FILES(files)],
        )
    )
    assert "CID extension was negotiated" in output
    assert ours.connection.peer_connection_id == b"ws"


def test_without_connection_ids_none_is_negotiated(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    (ours,), output = asyncio.run(
        _wolfssl_client_against_us(
            wolfssl, _server_config(files), ["-v", "4", *_wolfssl_credentials(files)]
        )
    )
    assert (
        "CID extension was negotiated" not in output and ours.connection.peer_connection_id == b""
    )


def test_hello_retry_request_both_ways(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    # wolfSSL's client sends no key share (-J): our server asks for one (and a cookie).
    (ours,), output = asyncio.run(
        _wolfssl_client_against_us(
            wolfssl, _server_config(files), ["-v", "4", "-J", *_wolfssl_credentials(files)]
        )
    )
    assert "SSL version is DTLSv1.3" in output and ours.negotiated_version == "DTLSv1.3"
    # wolfSSL's server answers with a stateless cookie HelloRetryRequest (-J); our client offers
    # x25519 first while wolfSSL's server wants P-256 (-Y): a retry for the group too.
    (ours,), output = asyncio.run(
        _our_client_against_wolfssl(
            wolfssl,
            _client_config(files, groups=(NamedGroup.x25519, NamedGroup.secp256r1)),
            ["-v", "4", "-J", "-Y", *SERVER_FILES(files)],
        )
    )
    assert "SSL version is DTLSv1.3" in output
    assert ours.connection.info.group == NamedGroup.secp256r1


def test_small_mtu_both_ways(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    mtu = 400
    (ours,), output = asyncio.run(
        _wolfssl_client_against_us(
            wolfssl,
            _server_config(files, mtu=mtu),
            [f"-u{mtu}", "-v", "4", *_wolfssl_credentials(files)],
        )
    )
    assert "SSL version is DTLSv1.3" in output
    (ours,), output = asyncio.run(
        _our_client_against_wolfssl(
            wolfssl, _client_config(files, mtu=mtu), [f"-u{mtu}", "-v", "4", *SERVER_FILES(files)]
        )
    )
    assert "SSL version is DTLSv1.3" in output


def test_whole_flights_dropped_both_ways(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    """The first transmission of each side's flight is lost; retransmissions repair it."""
    (ours,), output = asyncio.run(
        _wolfssl_client_against_us(
            wolfssl,
            _server_config(files, cookie_exchange=False),
            ["-v", "4", *_wolfssl_credentials(files)],
            drop=_DropFirstFlights(),
        )
    )
    assert "SSL version is DTLSv1.3" in output
    (ours,), output = asyncio.run(
        _our_client_against_wolfssl(
            wolfssl,
            _client_config(files),
            ["-v", "4", *SERVER_FILES(files)],
            drop=_DropFirstFlights(),
        )
    )
    assert "SSL version is DTLSv1.3" in output


def test_resumption_both_ways(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    (first, second), output = asyncio.run(
        _wolfssl_client_against_us(
            wolfssl,
            _server_config(files),
            ["-v", "4", "-r", *_wolfssl_credentials(files)],
            connections=2,
        )
    )
    assert "reused session id" in output
    assert not first.connection.session_resumed and second.connection.session_resumed
    (first, second), output = asyncio.run(
        _our_client_against_wolfssl(
            wolfssl, _client_config(files), ["-v", "4", *SERVER_FILES(files)], connections=2
        )
    )
    # (No -r for wolfSSL's server: 1.3 tickets need none, and -r makes it wait for more.)
    assert not first.connection.session_resumed and second.connection.session_resumed
    assert output.count("SSL version is DTLSv1.3") == 2


def test_psk_both_ways(wolfssl: WolfSSL) -> None:
    key = _wolfssl_psk_key()
    server = DTLSConfiguration(is_client=False, psk=key, psk_identity=b"Client_identity")
    # --openssl-psk: one identity (Client_identity), not one per suite with the hash appended.
    (ours,), output = asyncio.run(
        _wolfssl_client_against_us(wolfssl, server, ["-v", "4", "-s", "--openssl-psk"])
    )
    assert (
        "SSL version is DTLSv1.3" in output and ours.connection.psk_identity == b"Client_identity"
    )
    client = DTLSConfiguration(psk=key, psk_identity=b"Client_identity")
    (ours,), output = asyncio.run(_our_client_against_wolfssl(wolfssl, client, ["-v", "4", "-s"]))
    assert "SSL version is DTLSv1.3" in output and ours.negotiated_version == "DTLSv1.3"


def test_wolfssl_13_or_12_client_against_our_server(
    wolfssl: WolfSSL, files: dict[str, str]
) -> None:
    """``-v d`` offers 1.3 and 1.2: our server takes 1.3."""
    (ours,), output = asyncio.run(
        _wolfssl_client_against_us(
            wolfssl, _server_config(files), ["-v", "d", *_wolfssl_credentials(files)]
        )
    )
    assert "SSL version is DTLSv1.3" in output and ours.negotiated_version == "DTLSv1.3"


def test_wolfssl_13_or_12_client_against_our_12_only_server(
    wolfssl: WolfSSL, files: dict[str, str]
) -> None:
    """Issue 9's defect 2: ``-v d`` reorders the extensions of its second hello."""
    (ours,), output = asyncio.run(
        _wolfssl_client_against_us(
            wolfssl,
            _server_config(files, versions=DTLS_1_2_ONLY),
            ["-v", "d", *_wolfssl_credentials(files)],
        )
    )
    assert "SSL version is DTLSv1.2" in output and ours.negotiated_version == "DTLSv1.2"


def test_our_13_client_falls_back_to_a_wolfssl_12_server(
    wolfssl: WolfSSL, files: dict[str, str]
) -> None:
    (ours,), output = asyncio.run(
        _our_client_against_wolfssl(
            wolfssl, _client_config(files), ["-v", "3", *SERVER_FILES(files)]
        )
    )
    assert "SSL version is DTLSv1.2" in output and ours.negotiated_version == "DTLSv1.2"


def test_early_data_both_ways(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    """wolfSSL's 0-RTT data reaches our server; ours reaches wolfSSL's (after its retry)."""

    async def wolfssl_client_sends_early_data() -> tuple[list[bytes], bool]:
        configuration = _server_config(files, max_early_data=16384)
        async with dtls_asyncio.serve("127.0.0.1", 0, configuration) as server:
            _, port = server.local_address
            arguments = ["-v", "4", "-r", "-0", *_wolfssl_credentials(files)]
            async with wolfssl_client(wolfssl, port, *arguments) as client:
                first = await asyncio.wait_for(server.accept(), STEP_SECONDS)
                assert await asyncio.wait_for(first.recv(), STEP_SECONDS)
                await first.send(REPLY)
                resumed = await asyncio.wait_for(server.accept(), STEP_SECONDS)
                received = [await asyncio.wait_for(resumed.recv(), STEP_SECONDS) for _ in range(2)]
                await resumed.send(REPLY)
                output = await client.output()
                assert "reused session id" in output, output + client.errors()
                return received, resumed.connection.early_data_accepted

    received, accepted = asyncio.run(wolfssl_client_sends_early_data())
    assert accepted and received[0] == b"A drop of info"  # wolfSSL's early data, in epoch 1

    async def our_client_sends_early_data() -> tuple[bytes, bool]:
        async with wolfssl_server(
            wolfssl, "-e", "-v", "4", "-C", "2", "-0", *SERVER_FILES(files)
        ) as server:
            configuration = _client_config(files)
            first = await asyncio.wait_for(
                dtls_asyncio.connect("127.0.0.1", server.port, configuration), STEP_SECONDS
            )
            assert await _ping(first)
            await asyncio.sleep(0.05)  # the ticket
            session = first.connection.session
            assert isinstance(session, Session13) and session.max_early_data > 0
            first.close()
            await first.__aexit__(None, None, None)
            second = await asyncio.wait_for(
                dtls_asyncio.connect(
                    "127.0.0.1",
                    server.port,
                    dataclasses.replace(configuration, session=session, early_data=True),
                    early_data=[b"early bird\n"],
                ),
                STEP_SECONDS,
            )
            echoed = await asyncio.wait_for(second.recv(), STEP_SECONDS)
            accepted = second.connection.early_data_accepted
            second.close()
            await second.__aexit__(None, None, None)
            await server.output()
            return echoed, accepted

    echoed, accepted = asyncio.run(our_client_sends_early_data())
    # wolfSSL's server always answers with a HelloRetryRequest (its cookie), after which
    # early data is not allowed: our client sends it again once the handshake is done.
    assert echoed == b"early bird\n" and not accepted


def test_key_update_both_ways(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    # wolfSSL's client updates its keys (asking us to update too) before it sends (-I).
    (ours,), output = asyncio.run(
        _wolfssl_client_against_us(
            wolfssl, _server_config(files), ["-v", "4", "-I", *_wolfssl_credentials(files)]
        )
    )
    sent, received = ours.connection.key_updates
    assert received >= 1 and sent >= 1 and REPLY.decode() in output

    async def our_client_updates() -> tuple[int, int]:
        async with wolfssl_server(wolfssl, "-e", "-v", "4", *SERVER_FILES(files)) as server:
            connection = await asyncio.wait_for(
                dtls_asyncio.connect("127.0.0.1", server.port, _client_config(files)), STEP_SECONDS
            )
            assert await _ping(connection)
            connection.connection.update_keys(time.monotonic_ns(), request_peer=True)
            for _ in range(3):
                await asyncio.sleep(0.1)  # the ACK, then wolfSSL's own KeyUpdate
                assert await _ping(connection) == b"ping from python\n"
            updates = connection.connection.key_updates
            connection.close()
            await connection.__aexit__(None, None, None)
            await server.output()
            return updates

    assert asyncio.run(our_client_updates()) == (1, 1)
