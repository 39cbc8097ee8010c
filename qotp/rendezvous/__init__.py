"""Peers behind NATs: a rendezvous server, hole punching, a relay of last resort.

* :mod:`qotp.rendezvous.server` -- the introduction and relay server, sans-IO;
  :func:`serve_rendezvous` runs it on a socket.
* :mod:`qotp.rendezvous.client` -- a peer's side, sans-IO.
* :class:`Peer` -- a peer on one asyncio socket: ``await Peer.start(...)``,
  ``await peer.connect("bob")`` or ``await peer.accept()`` give a
  :class:`PeerLink` whose ``connection`` is an ordinary QOTP connection.
"""

from __future__ import annotations

from qotp.rendezvous.peer import (
    Peer,
    PeerConnected,
    PeerDisconnected,
    PeerError,
    PeerEvent,
    PeerLink,
    PeerPathChanged,
    PeerRegistered,
)
from qotp.rendezvous.server import RendezvousConfiguration, RendezvousServer
from qotp.rendezvous.service import RendezvousService, serve_rendezvous

__all__ = [
    "Peer",
    "PeerConnected",
    "PeerDisconnected",
    "PeerError",
    "PeerEvent",
    "PeerLink",
    "PeerPathChanged",
    "PeerRegistered",
    "RendezvousConfiguration",
    "RendezvousServer",
    "RendezvousService",
    "serve_rendezvous",
]
