"""Interop with wolfSSL's example client and server (built from Debian's source) over UDP.

Our side runs in process through the asyncio adapter; wolfSSL runs as its
example programs (see ``wolfssl_peer.py``).  Every test skips, saying why,
only when wolfSSL cannot be built on this machine.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography import x509
from dtls_helpers import Pki, make_pki, pem_chain, pem_key
from dtls_processes import STEP_SECONDS
from wolfssl_peer import WolfSSL, wolfssl, wolfssl_client, wolfssl_server

import dtls.asyncio as dtls_asyncio
from dtls.config import (
    CertificatePrivateKey,
    DTLSConfiguration,
    load_certificate_chain,
    load_private_key,
)

__all__ = ["wolfssl"]  # the fixture, imported so pytest finds it

HELLO = b"hello wolfssl!"
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
) -> tuple[dtls_asyncio.AsyncDTLSConnection, str]:
    """Serve in process; wolfSSL's client says hello, we answer; return its output."""
    async with dtls_asyncio.serve(
        "127.0.0.1", 0, configuration, connection_id_bytes=connection_id_bytes
    ) as server:
        _, port = server.local_address
        async with wolfssl_client(wolfssl, port, *arguments) as client:
            connection = await asyncio.wait_for(server.accept(), STEP_SECONDS)
            data = await asyncio.wait_for(connection.recv(), STEP_SECONDS)
            assert data.rstrip(b"\0\n") == HELLO, client.errors()
            await connection.send(REPLY)
            output = await client.output()
            assert client.process.returncode == 0, output + client.errors()
            return connection, output


async def _our_client_against_wolfssl(
    wolfssl: WolfSSL, configuration: DTLSConfiguration, arguments: list[str]
) -> tuple[dtls_asyncio.AsyncDTLSConnection, str]:
    """wolfSSL's echo server; we send a line, read it back, close; return its output."""
    async with wolfssl_server(wolfssl, "-e", *arguments) as server:
        connection = await asyncio.wait_for(
            dtls_asyncio.connect("127.0.0.1", server.port, configuration), STEP_SECONDS
        )
        await connection.send(b"ping from python\n")
        echoed = await asyncio.wait_for(connection.recv(), STEP_SECONDS)
        assert echoed == b"ping from python\n", server.errors()
        connection.close()
        await connection.__aexit__(None, None, None)
        output = await server.output()
        return connection, output


# --------------------------------------------------------------------------- DTLS 1.2


def test_wolfssl_12_client_against_our_server(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    connection, output = asyncio.run(
        _wolfssl_client_against_us(
            wolfssl, _server_config(files), ["-v", "3", *_wolfssl_credentials(files)]
        )
    )
    assert "SSL version is DTLSv1.2" in output
    assert REPLY.decode() in output
    assert connection.negotiated_version == "DTLSv1.2"


def test_our_12_client_against_wolfssl_server(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    connection, output = asyncio.run(
        _our_client_against_wolfssl(
            wolfssl,
            _client_config(files),
            ["-v", "3", "-c", files["server"], "-k", files["server.key"], "-d"],
        )
    )
    assert "SSL version is DTLSv1.2" in output
    assert connection.negotiated_version == "DTLSv1.2"


# --------------------------------------------------------------------------- DTLS 1.3


def test_wolfssl_13_client_against_our_server(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    connection, output = asyncio.run(
        _wolfssl_client_against_us(
            wolfssl, _server_config(files), ["-v", "4", *_wolfssl_credentials(files)]
        )
    )
    assert "SSL version is DTLSv1.3" in output
    assert REPLY.decode() in output
    assert connection.negotiated_version == "DTLSv1.3"


def test_our_13_client_against_wolfssl_server(wolfssl: WolfSSL, files: dict[str, str]) -> None:
    connection, output = asyncio.run(
        _our_client_against_wolfssl(
            wolfssl,
            _client_config(files),
            ["-v", "4", "-c", files["server"], "-k", files["server.key"], "-d"],
        )
    )
    assert "SSL version is DTLSv1.3" in output
    assert connection.negotiated_version == "DTLSv1.3"
