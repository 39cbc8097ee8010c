"""The ``dtls`` command line (``dtls`` / ``python -m dtls``), with openssl s_client/s_server parity.

One module per command (``server.py``, ``client.py``), each a thin layer over
:mod:`dtls.asyncio`; the parser and ``main`` in :mod:`dtls.cli.app`; shared
parsing, files, output and failure handling in :mod:`dtls.cli.common`, HOST:PORT
parsing in :mod:`dtls.cli.addresses` (the ``qotp`` command line shares it),
shared TLS options in :mod:`dtls.cli.options`.  Every failure is one line on
stderr (or ``{"ok": false, "error": ...}`` on stdout with ``--json``) and a
non-zero exit status; Ctrl-C is one line and 130.
``dtls`` never imports ``qotp``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from .app import build_parser, main

__all__ = ["build_parser", "main"]

# Imported on first use (dtls._lazy): ``qotp`` imports dtls.cli.addresses without
# loading the DTLS engine.
__getattr__, __dir__ = lazy_attributes(__name__, {"app": ("build_parser", "main")}, __all__)
