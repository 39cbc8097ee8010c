"""A blocking DTLS client: send three datagrams, print the echoes, close cleanly.

Run:  python examples/dtls_echo_client.py [--port 4433] (--cafile ca.pem | --insecure)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cryptography import x509

from dtls import DTLSConfiguration
from dtls.asyncio.blocking import blocking_connect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433)
    trust = parser.add_mutually_exclusive_group(required=True)
    trust.add_argument("--cafile")
    trust.add_argument("--insecure", action="store_true")
    parser.add_argument("--servername", default="localhost")
    arguments = parser.parse_args()
    cas = (
        tuple(x509.load_pem_x509_certificates(Path(arguments.cafile).read_bytes()))
        if arguments.cafile
        else None
    )
    configuration = DTLSConfiguration(
        is_client=True,
        ca_certificates=cas,
        verify_peer=not arguments.insecure,
        server_name=arguments.servername,
    )
    with blocking_connect(arguments.host, arguments.port, configuration, timeout=10) as connection:
        for index in range(3):
            connection.send(f"datagram {index}".encode())
            print(connection.recv(timeout=5).decode())


if __name__ == "__main__":
    main()
