"""Drive a pyOpenSSL DTLS connection in memory against one of ours.

pyOpenSSL's memory BIO is a byte stream: one ``bio_read`` may hold several
datagrams' worth of records.  Our record parser takes any number of records
per datagram, so the bytes are fed to our side whole.
"""

from __future__ import annotations

from collections.abc import Callable

from dtls_helpers import SECOND_NS, pem_chain
from OpenSSL import SSL, crypto

from dtls.connection import DTLSConnection

OPENSSL_ADDRESS = ("192.0.2.9", 9999)
DTLS1_2_VERSION = 0xFEFD
MTU = 1200


def make_context(
    *,
    server: bool,
    chain: tuple[object, ...] = (),
    key: object = None,
    ciphers: str | None = None,
    groups: str | None = None,
    ca_pem: bytes | None = None,
    verify_peer: bool = False,
    alpn: list[bytes] | None = None,
    srtp: bytes | None = None,
) -> SSL.Context:
    context = SSL.Context(SSL.DTLS_METHOD)
    context.set_min_proto_version(DTLS1_2_VERSION)
    context.set_max_proto_version(DTLS1_2_VERSION)
    context.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_TICKET)
    if chain:
        context.use_certificate(chain[0])  # type: ignore[arg-type]
        for extra in chain[1:]:
            context.add_extra_chain_cert(extra)  # type: ignore[arg-type]
        context.use_privatekey(key)  # type: ignore[arg-type]
    if ciphers:
        context.set_cipher_list(ciphers.encode())
    if groups:
        from OpenSSL._util import lib

        # SSL_CTX_set1_groups_list under its older name, the one pyOpenSSL binds.
        assert lib.SSL_CTX_set1_curves_list(context._context, groups.encode()) == 1
    if ca_pem is not None:
        store = context.get_cert_store()
        assert store is not None
        from cryptography import x509

        for certificate in x509.load_pem_x509_certificates(ca_pem):
            store.add_cert(crypto.X509.from_cryptography(certificate))
    if verify_peer:
        mode = SSL.VERIFY_PEER | (SSL.VERIFY_FAIL_IF_NO_PEER_CERT if server else 0)
        context.set_verify(mode, lambda *args: bool(args[-1]))
    if alpn:
        if server:
            context.set_alpn_select_callback(
                lambda connection, offered: next((p for p in alpn if p in offered), b"")
            )
        else:
            context.set_alpn_protos(alpn)
    if srtp:
        context.set_tlsext_use_srtp(srtp)
    return context


def make_openssl(context: SSL.Context, *, server: bool) -> SSL.Connection:
    connection = SSL.Connection(context, None)
    connection.set_ciphertext_mtu(MTU)
    if server:
        connection.set_accept_state()
    else:
        connection.set_connect_state()
    return connection


def drain_openssl(connection: SSL.Connection) -> bytes:
    out = b""
    while True:
        try:
            chunk = connection.bio_read(65536)
        except SSL.WantReadError:
            return out
        if not chunk:
            return out
        out += chunk


def openssl_step(connection: SSL.Connection) -> None:
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass


def pump(
    ours: DTLSConnection,
    theirs: SSL.Connection,
    *,
    now: int = 0,
    rounds: int = 200,
    drop_ours: Callable[[int, bytes], bool] | None = None,
    drop_theirs: Callable[[int, bytes], bool] | None = None,
    done: Callable[[], bool] | None = None,
) -> int:
    """Exchange bytes until both handshakes are done (or ``done()``), advancing virtual time.

    Loss on our side is healed by our timers; loss on OpenSSL's side by
    ``DTLSv1_handle_timeout``, which pyOpenSSL does not expose, so we resend by
    re-driving the handshake after a virtual second.
    """
    ours.start_handshake(now)
    ours_index = 0
    theirs_index = 0
    for _ in range(rounds):
        if not _openssl_done(theirs):
            openssl_step(theirs)
        else:
            # After its handshake OpenSSL only looks at incoming records inside SSL_read,
            # which is also where it answers a repeated final flight.
            try:
                theirs.recv(65536)
            except (SSL.WantReadError, SSL.ZeroReturnError):
                pass
        outgoing = drain_openssl(theirs)
        if outgoing:
            theirs_index += 1
            if drop_theirs is None or not drop_theirs(theirs_index, outgoing):
                ours.receive_datagram(outgoing, OPENSSL_ADDRESS, now)
        for datagram, _ in ours.datagrams_to_send(now):
            ours_index += 1
            if drop_ours is None or not drop_ours(ours_index, datagram):
                theirs.bio_write(datagram)
        if done is not None:
            if done():
                return now
        elif ours.is_established and _openssl_done(theirs):
            return now
        if not outgoing:
            timer = ours.get_timer()
            now = timer if timer is not None and timer > now else now + SECOND_NS
            if ours.get_timer() is not None and ours.get_timer() <= now:  # type: ignore[operator]
                ours.handle_timer(now)
            _openssl_timeout(theirs)
    return now


def _openssl_done(connection: SSL.Connection) -> bool:
    return connection.get_state_string().startswith(b"SSL negotiation finished")


def _openssl_timeout(connection: SSL.Connection) -> None:
    """Let OpenSSL retransmit if its (wall-clock) timer says so."""
    try:
        connection.DTLSv1_handle_timeout()
    except SSL.Error:
        pass


def openssl_session_reused(connection: SSL.Connection) -> bool:
    """SSL_session_reused (pyOpenSSL has no wrapper for it)."""
    from OpenSSL._util import lib

    return bool(lib.SSL_session_reused(connection._ssl))


def openssl_group(connection: SSL.Connection) -> str:
    """Name of the group OpenSSL negotiated."""
    from OpenSSL._util import ffi, lib

    name = lib.SSL_get0_group_name(connection._ssl)
    return "" if name == ffi.NULL else ffi.string(name).decode()


__all__ = ["OPENSSL_ADDRESS", "drain_openssl", "make_context", "make_openssl", "pump", "pem_chain"]
