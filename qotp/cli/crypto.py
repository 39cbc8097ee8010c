"""``--crypto native|dtls`` for ``qotp serve`` and ``qotp send``: the crypto layer is a choice.

``native`` is QOTP's own envelope (X25519, ChaCha20-Poly1305).  ``dtls`` runs
the same transport over DTLS records (:mod:`qotp.dtls_protection`; DTLS 1.3
with a certificate, falling back to 1.2; the PSK suites without trust anchors
are DTLS 1.2 ones),
authenticated by a certificate (``--cert``/``--key`` on serve, ``--cafile`` or
``--insecure`` on send) or by a pre-shared key (``--psk HEX [--psk-identity
ID]`` on both).  Everything else about the commands stays the same.
"""

from __future__ import annotations

import argparse

from cryptography import x509

from qotp.cli.common import CliError
from qotp.errors import QotpError
from qotp.protection import CryptoLayer

__all__ = ["add_crypto_options", "crypto_layer"]

PSK_ONLY_SUITES_NAMES = (
    "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_PSK_WITH_AES_128_GCM_SHA256",
)
"""What a client with a PSK and no trust anchor offers (no certificate suites)."""
MIN_PSK_BYTES = 16


def add_crypto_options(parser: argparse.ArgumentParser, *, server: bool) -> None:
    """``--crypto`` and the DTLS credentials of one side."""
    group = parser.add_argument_group("crypto layer")
    group.add_argument(
        "--crypto",
        choices=("native", "dtls"),
        default="native",
        help="native: QOTP's envelope (X25519, ChaCha20-Poly1305); dtls: the same transport "
        "over DTLS records, 1.3 or 1.2 (certificate or PSK)",
    )
    if server:
        group.add_argument("--cert", metavar="FILE", help="dtls: certificate chain (PEM)")
        group.add_argument("--key", metavar="FILE", help="dtls: private key of --cert (PEM)")
    else:
        trust = group.add_mutually_exclusive_group()
        trust.add_argument(
            "--cafile", metavar="FILE", help="dtls: trust anchors (PEM) to verify the server"
        )
        trust.add_argument(
            "--insecure",
            action="store_true",
            help="dtls: accept any server certificate (encrypted, but not authenticated)",
        )
        group.add_argument(
            "--server-name",
            metavar="NAME",
            help="dtls: name the server certificate must carry (default: the HOST given)",
        )
    group.add_argument(
        "--psk", metavar="HEX", help=f"dtls: pre-shared key, at least {MIN_PSK_BYTES} bytes in hex"
    )
    group.add_argument(
        "--psk-identity",
        metavar="ID",
        help="dtls: the identity a client must send with the PSK (default: any)"
        if server
        else "dtls: the identity sent with the PSK (default: empty)",
    )


def _psk(arguments: argparse.Namespace) -> tuple[bytes | None, bytes]:
    identity = (arguments.psk_identity or "").encode()
    if arguments.psk is None:
        if arguments.psk_identity is not None:
            raise CliError("--psk-identity needs --psk")
        return None, identity
    try:
        key = bytes.fromhex(arguments.psk.strip().removeprefix("0x"))
    except ValueError:
        raise CliError("--psk must be hex digits") from None
    if len(key) < MIN_PSK_BYTES:
        raise CliError(f"--psk is {len(key)} bytes; use at least {MIN_PSK_BYTES} (e.g. 32 random)")
    return key, identity


def crypto_layer(
    arguments: argparse.Namespace, *, server: bool, server_host: str | None = None
) -> CryptoLayer | None:
    """The crypto layer the options ask for (None: native), or a one-line CliError."""
    dtls_options = ["--psk", "--psk-identity"] + (
        ["--cert", "--key"] if server else ["--cafile", "--insecure", "--server-name"]
    )
    given = [
        option
        for option in dtls_options
        if getattr(arguments, option.lstrip("-").replace("-", "_")) not in (None, False)
    ]
    if arguments.crypto == "native":
        if given:
            raise CliError(f"{given[0]} needs --crypto dtls")
        return None
    # dtls is imported only here: `qotp` without --crypto dtls never loads it.
    from dtls.cli.common import CliError as DtlsCliError
    from dtls.cli.common import load_chain_and_key, load_trust_anchors
    from dtls.config import CertificatePrivateKey, DTLSConfiguration
    from dtls.errors import DTLSError
    from dtls.suites import CipherSuite
    from qotp.dtls_protection import DtlsCryptoLayer

    psk, identity = _psk(arguments)
    try:
        if server:
            if (arguments.cert is None) != (arguments.key is None):
                raise CliError("--cert and --key go together")
            if arguments.cert is None and psk is None:
                raise CliError("--crypto dtls needs --cert FILE --key FILE, or --psk HEX")
            chain: tuple[x509.Certificate, ...] = ()
            key: CertificatePrivateKey | None = None
            if arguments.cert is not None:
                # The dtls command's loader: unreadable, encrypted or mismatched files
                # are one line each, as with `dtls server`.
                try:
                    chain, key = load_chain_and_key(arguments.cert, arguments.key)
                except DtlsCliError as error:
                    raise CliError(error.message) from None
            configuration = DTLSConfiguration(
                is_client=False,
                certificate_chain=chain,
                private_key=key,
                psk=psk,
                psk_identity=identity,  # empty: any identity is taken
                psk_identity_hint=b"",
            )
            return DtlsCryptoLayer(server=configuration)
        if arguments.cafile is None and not arguments.insecure and psk is None:
            raise CliError(
                "--crypto dtls needs --cafile FILE (or --insecure) to check the server, "
                "or --psk HEX"
            )
        anchors = None
        if arguments.cafile is not None:
            try:
                anchors = load_trust_anchors(arguments.cafile)
            except DtlsCliError as error:
                raise CliError(error.message) from None
        suites = DTLSConfiguration().cipher_suites
        if psk is not None and anchors is None and not arguments.insecure:
            suites = tuple(CipherSuite[name] for name in PSK_ONLY_SUITES_NAMES)
        configuration = DTLSConfiguration(
            ca_certificates=anchors,
            verify_peer=not arguments.insecure,
            server_name=arguments.server_name or server_host,
            cipher_suites=suites,
            psk=psk,
            psk_identity=identity,
        )
        return DtlsCryptoLayer(client=configuration)
    except (DTLSError, QotpError) as error:
        raise CliError(f"--crypto dtls: {error}") from None
