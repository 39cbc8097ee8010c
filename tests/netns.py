"""Linux network namespaces for tests: private networks behind NATs, a public network, processes.

Everything is created by the test that uses it and removed in ``finally``:
namespaces carry a per-process suffix (``qn<pid>x<n>-<role>``), so two runs
at once never collide, and deleting a namespace takes its veth ends and its
nftables rules with it.  Namespaces left behind by a run that was killed
(its pid is gone) are removed the next time.

:func:`nat_topology` builds::

    peer-a (192.168.1.2) -- nat-a [masquerade] --+
                                                  +-- public bridge (203.0.113.0/24):
    peer-b (192.168.2.2) -- nat-b [masquerade] --+    rendezvous 203.0.113.1

``kind="cone"``: plain masquerade, which keeps a flow's source port when it
can (port-preserving, endpoint-independent mapping); ``kind="symmetric"``:
``masquerade fully-random``, a new random port per destination.  Both NATs
filter like home routers: only replies to flows from inside get in, and the
router itself answers nothing from outside (an unsolicited packet must not
leave a conntrack entry that would take the port a punch needs).

``ping`` is not installed here: :func:`udp_exchange` tests reachability.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest
from system_packages import require_command

PUBLIC_PREFIX = "203.0.113"
RENDEZVOUS_IP = f"{PUBLIC_PREFIX}.1"
_counter = itertools.count()
_NAME = re.compile(r"^qn(\d+)x\d+-")


def _ip(*arguments: str, namespace: str | None = None, check: bool = True) -> str:
    command = ["ip"]
    if namespace is not None:
        command += ["-n", namespace]
    done = subprocess.run(
        [*command, *arguments], capture_output=True, text=True, timeout=30, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(arguments)}: {done.stderr.strip()}")
    return done.stdout


def _remove_stale_namespaces() -> None:
    """Namespaces of test runs whose process is gone."""
    for line in _ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        match = _NAME.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _ip("netns", "del", name, check=False)
        except PermissionError:
            pass


def require_namespaces() -> None:
    """Skip the calling test, with the reason, where namespaces cannot be had."""
    if sys.platform != "linux":
        pytest.skip("network namespaces need Linux")
    require_command("ip", package="iproute2")
    require_command("nft", package="nftables")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")
    _remove_stale_namespaces()
    probe = f"qn{os.getpid()}x{next(_counter)}-probe"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {done.stderr.strip()}")
    _ip("netns", "del", probe, check=False)


@dataclass
class Namespaces:
    """A set of namespaces and the processes started in them; :meth:`close` removes all."""

    names: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    run_id: str = field(default_factory=lambda: f"qn{os.getpid()}x{next(_counter)}")

    def add(self, role: str) -> str:
        """A new namespace for ``role`` (loopback up, forwarding on); returns its name."""
        name = f"{self.run_id}-{role}"
        _ip("netns", "add", name)
        self.names[role] = name
        _ip("link", "set", "lo", "up", namespace=name)
        self.run(role, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        return name

    def run(self, role: str, *command: str, check: bool = True) -> str:
        """Run a command in a namespace; its stdout."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.names[role], *command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} in {role}: {done.stderr.strip()}")
        return done.stdout

    def popen(self, role: str, command: Sequence[str], **options: object) -> subprocess.Popen[str]:
        """Start a process in a namespace (stopped and reaped by :meth:`close`)."""
        process: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", self.names[role], *command], text=True, **options
        )
        self.processes.append(process)
        return process

    def qotp(self, role: str, *arguments: str, **options: object) -> subprocess.Popen[str]:
        """``python -m qotp ARGUMENTS`` in a namespace, stdout and stderr piped."""
        options.setdefault("stdout", subprocess.PIPE)
        options.setdefault("stderr", subprocess.PIPE)
        return self.popen(role, [sys.executable, "-m", "qotp", *arguments], **options)

    def link(
        self,
        role_a: str,
        address_a: str | None,
        role_b: str,
        address_b: str | None,
        *,
        name_a: str | None = None,
    ) -> None:
        """A veth pair between two namespaces, named after the other side, with addresses."""
        if_a, if_b = name_a or f"to-{role_b}"[:15], f"to-{role_a}"[:15]
        _ip(
            "link", "add", if_a, "netns", self.names[role_a], "type", "veth",
            "peer", "name", if_b, "netns", self.names[role_b],
        )  # fmt: skip
        for role, interface, address in ((role_a, if_a, address_a), (role_b, if_b, address_b)):
            if address is not None:
                _ip("addr", "add", address, "dev", interface, namespace=self.names[role])
            _ip("link", "set", interface, "up", namespace=self.names[role])

    def nft(self, role: str, ruleset: str) -> None:
        """Load an nftables ruleset into a namespace."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.names[role], "nft", "-f", "-"],
            input=ruleset,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"nft in {role}: {done.stderr.strip()}")

    def close(self) -> None:
        """Stop every process, then delete every namespace (and so its links and rules)."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.communicate(timeout=10)
        for name in self.names.values():
            _ip("netns", "del", name, check=False)
        self.names.clear()


@contextlib.contextmanager
def namespaces() -> Iterator[Namespaces]:
    """A :class:`Namespaces` removed on exit, whatever happens."""
    require_namespaces()
    spaces = Namespaces()
    try:
        yield spaces
    finally:
        spaces.close()


def nat_ruleset(kind: str) -> str:
    """A home router's nftables rules: masquerade out of ``wan``, only replies in."""
    random = " fully-random" if kind == "symmetric" else ""
    return f"""
table ip nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" masquerade{random}
    }}
}}
table ip filter {{
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state new drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "wan" ct state != {{ established, related }} drop
    }}
}}
"""


@dataclass(frozen=True, slots=True)
class NatTopology:
    """Two private networks behind their own NATs, and a public one with the rendezvous."""

    spaces: Namespaces
    kind: str
    rendezvous_ip: str = RENDEZVOUS_IP
    peer_ips: tuple[str, str] = ("192.168.1.2", "192.168.2.2")
    nat_ips: tuple[str, str] = (f"{PUBLIC_PREFIX}.2", f"{PUBLIC_PREFIX}.3")


@contextlib.contextmanager
def nat_topology(kind: str) -> Iterator[NatTopology]:
    """Build the two-NAT topology (``kind``: ``"cone"`` or ``"symmetric"``); removed on exit."""
    assert kind in ("cone", "symmetric")
    with namespaces() as spaces:
        spaces.add("public")
        _ip("link", "add", "br0", "type", "bridge", namespace=spaces.names["public"])
        _ip("addr", "add", f"{RENDEZVOUS_IP}/24", "dev", "br0", namespace=spaces.names["public"])
        _ip("link", "set", "br0", "up", namespace=spaces.names["public"])
        for index, side in enumerate(("a", "b"), start=1):
            nat, peer = f"nat-{side}", f"peer-{side}"
            spaces.add(nat)
            spaces.add(peer)
            # The NAT's wan side hangs on the public bridge.
            spaces.link(nat, f"{PUBLIC_PREFIX}.{index + 1}/24", "public", None, name_a="wan")
            _ip("link", "set", f"to-{nat}", "master", "br0", namespace=spaces.names["public"])
            spaces.link(nat, f"192.168.{index}.1/24", peer, f"192.168.{index}.2/24")
            _ip(
                "route", "add", "default", "via", f"192.168.{index}.1", namespace=spaces.names[peer]
            )
            spaces.nft(nat, nat_ruleset(kind))
        yield NatTopology(spaces=spaces, kind=kind)


UDP_ECHO = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", int(sys.argv[1])))
sock.settimeout(float(sys.argv[2]))
print("ready", flush=True)
try:
    while True:
        data, address = sock.recvfrom(2048)
        sock.sendto(f"{address[0]}:{address[1]}".encode(), address)
except socket.timeout:
    pass
"""

UDP_ASK = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", int(sys.argv[3])))
sock.settimeout(float(sys.argv[4]))
for port in sys.argv[2].split(","):
    for attempt in range(int(sys.argv[5])):
        sock.sendto(b"hello", (sys.argv[1], int(port)))
        try:
            print(sock.recvfrom(2048)[0].decode(), flush=True)
            break
        except socket.timeout:
            continue
    else:
        print("timeout", flush=True)
"""


def udp_exchange(
    spaces: Namespaces,
    server: str,
    client: str,
    address: str,
    ports: Sequence[int],
    source: int,
    *,
    attempts: int = 5,
    timeout_s: float = 1.0,
) -> list[str]:
    """From ``client``'s UDP port ``source``, ask ``server``'s echo on each of ``ports`` how it
    sees us; returns the ``HOST:PORT`` each saw (``"timeout"`` where nothing came back)."""
    echoes = [
        spaces.popen(
            server, [sys.executable, "-c", UDP_ECHO, str(port), "10"], stdout=subprocess.PIPE
        )
        for port in ports
    ]
    for echo in echoes:
        assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
    seen = spaces.run(
        client,
        sys.executable,
        "-c",
        UDP_ASK,
        address,
        ",".join(str(port) for port in ports),
        str(source),
        str(timeout_s),
        str(attempts),
    )
    for echo in echoes:
        echo.kill()
    return seen.split()
