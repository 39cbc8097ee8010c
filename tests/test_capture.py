"""``qotp.capture`` and ``qotp decrypt --pcap``: key logs, GSO splitting, directions, tshark.

The system test captures a real 4-stream echo on loopback with tcpdump,
decrypts it (at least 99 % of the datagrams, both directions, the handshake
included), writes the decrypted capture and has tshark dissect it with
``contrib/wireshark/qotp.lua``.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from enginepair import CLIENT_ADDRESS, SERVER_ADDRESS, EnginePair
from system_packages import require_command

from qotp.capture import (
    CaptureDecryptor,
    CapturedPacket,
    DecryptedDatagram,
    KeyLog,
    encode_decrypted,
    split_coalesced,
)
from qotp.endpoint import QotpEndpoint
from qotp.envelope import DEFAULT_MTU

ROOT = Path(__file__).resolve().parent.parent
DISSECTOR = ROOT / "contrib" / "wireshark" / "qotp.lua"
QOTP = [sys.executable, "-m", "qotp"]
CAPTURE_END_MARKER = b"end of the qotp capture test"


# -- a conversation on the virtual network, recorded as a capture would ---------------


def record_conversation(
    *, streams: int = 2, size: int = 20_000
) -> tuple[list[CapturedPacket], str]:
    """Every datagram of an in-memory echo-like exchange, and the key log it wrote."""
    lines: list[str] = []
    pair = EnginePair(client=QotpEndpoint(key_log=lines.append), server=QotpEndpoint())
    packets: list[CapturedPacket] = []

    def record(side: str, datagram: bytes) -> bool:
        source, destination = (
            (CLIENT_ADDRESS, SERVER_ADDRESS)
            if side == "client"
            else (SERVER_ADDRESS, CLIENT_ADDRESS)
        )
        packets.append(
            CapturedPacket(len(packets) + 1, pair.now / 1e9, source, destination, datagram)
        )
        return False

    pair.drop = record
    connection = pair.client.connect(SERVER_ADDRESS, now=0)
    for stream_id in range(streams):
        connection.send_stream_data(stream_id, bytes([stream_id]) * size, end_stream=True, now=0)
    # Until every byte and CLOSE was sent and acknowledged.
    pair.run_until(
        lambda: not connection.recovery.in_flight and not connection.send_buffer.has_new_work()
    )
    return packets, "".join(lines)


def test_key_log_parsing() -> None:
    secret = "ab" * 32
    log = KeyLog.parse(
        f"# comment\n\nQOTP_SHARED_SECRET f1e6312f4e6a9bfc {secret}\n"
        f"QOTP_SHARED_SECRET_ID 1 {secret}\nCLIENT_RANDOM aa bb\nQOTP_SHARED_SECRET zz {secret}\n"
        "QOTP_SHARED_SECRET 5 abcd\n"
    )
    assert log.shared_secrets == {0xF1E6312F4E6A9BFC: bytes.fromhex(secret)}
    assert log.shared_secret_ids == {1: bytes.fromhex(secret)}
    assert log.ignored_lines == 3 and len(log) == 2


def test_every_datagram_decrypts_with_directions() -> None:
    packets, key_log = record_conversation()
    decryptor = CaptureDecryptor(KeyLog.parse(key_log))
    datagrams = list(decryptor.decrypt_all(packets))
    assert len(datagrams) == len(packets)
    assert all(datagram.ok for datagram in datagrams), [d.result for d in datagrams if not d.ok]
    for datagram in datagrams:
        assert datagram.from_initiator == (datagram.packet.source == CLIENT_ADDRESS)
    assert [datagram.result["type"] for datagram in datagrams[:2]] == ["InitSnd", "InitRcv"]
    sent = {
        (d.result["header"]["stream_id"], d.result["header"]["stream_offset"])
        for d in datagrams
        if d.from_initiator and d.result["header"] and d.result["header"]["kind"] == "data"
    }
    assert {stream for stream, _ in sent} == {0, 1}


def test_directions_without_the_handshake() -> None:
    """A capture started mid-connection: both directions tried, the right one remembered."""
    packets, key_log = record_conversation()
    datagrams = list(CaptureDecryptor(KeyLog.parse(key_log)).decrypt_all(packets[2:]))
    assert all(datagram.ok for datagram in datagrams)
    assert all(
        datagram.from_initiator == (datagram.packet.source == CLIENT_ADDRESS)
        for datagram in datagrams
    )


def test_gso_coalesced_packets_are_split() -> None:
    packets, key_log = record_conversation(streams=4, size=30_000)
    joined: list[CapturedPacket] = []
    segment_sizes: list[int] = []
    for packet in packets:
        if (
            joined
            and packet.payload[0] == 0x80
            and joined[-1].source == packet.source
            and len(packet.payload) <= segment_sizes[-1]
            and len(joined[-1].payload) % segment_sizes[-1] == 0
        ):
            last = joined[-1]
            joined[-1] = CapturedPacket(
                last.number, last.timestamp, last.source, last.destination,
                last.payload + packet.payload,
            )  # fmt: skip
        else:
            joined.append(packet)
            segment_sizes.append(len(packet.payload))
    assert len(joined) < len(packets) / 2  # the exchange really had runs
    datagrams = list(CaptureDecryptor(KeyLog.parse(key_log)).decrypt_all(joined))
    assert [d.datagram for d in datagrams] == [p.payload for p in packets]
    assert all(datagram.ok for datagram in datagrams)
    # Without a key the structure alone splits them the same way.
    assert [len(part) for part in split_coalesced(joined[3].payload)] == [
        len(p.payload) for p in packets if joined[3].payload.find(p.payload) >= 0
    ]


def test_missing_key_and_receiver_drops() -> None:
    packets, _ = record_conversation()
    short_init = CapturedPacket(99, 0.0, CLIENT_ADDRESS, SERVER_ADDRESS, packets[0].payload[:600])
    datagrams = CaptureDecryptor(KeyLog()).decrypt(short_init) + CaptureDecryptor(KeyLog()).decrypt(
        packets[2]
    )
    init, data = datagrams
    assert init.ok and init.result["type"] == "InitSnd"
    assert init.receiver_drops == f"INIT_SND of 600 bytes is shorter than the mtu {DEFAULT_MTU}"
    assert not data.ok and "no QOTP_SHARED_SECRET for connection" in data.result["error"]
    assert packets[0].payload and len(packets[0].payload) >= DEFAULT_MTU


def test_decrypted_record_layout() -> None:
    packets, key_log = record_conversation()
    datagram: DecryptedDatagram = CaptureDecryptor(KeyLog.parse(key_log)).decrypt(packets[2])[0]
    record = encode_decrypted(datagram)
    magic, version, message_type, flags, _, connection_id, sn, epoch = struct.unpack_from(
        "<4sBBBBQQQ", record
    )
    assert (magic, version, message_type, flags) == (b"QOTP", 1, 4, 1)
    assert connection_id == datagram.result["conn_id"] and sn == datagram.result["sn"]
    assert epoch == 0 and record[32:] == datagram.payload


# -- tcpdump, qotp decrypt --pcap, tshark ---------------------------------------------------


def test_tshark_reads_a_decrypted_loopback_capture(tmp_path: Path) -> None:
    tcpdump = require_command("tcpdump")
    tshark = require_command("tshark")
    keys = tmp_path / "keys.log"
    capture = tmp_path / "echo.pcap"
    decrypted = tmp_path / "decrypted.pcapng"
    streams, size = 4, 300_000
    server = subprocess.Popen(
        [*QOTP, "serve", "--listen", "127.0.0.1:0", "--mode", "echo", "--keylog", str(keys)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    dump: subprocess.Popen[str] | None = None
    try:
        assert server.stdout is not None
        server.stdout.readline()
        address = server.stdout.readline().strip().removeprefix("listening=")
        port = address.rsplit(":", 1)[1]
        marker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        marker.bind(("127.0.0.1", 0))
        marker_port = marker.getsockname()[1]
        dump = subprocess.Popen(
            [tcpdump, "-i", "lo", "-U", "-Z", "root", "-w", str(capture),
             f"udp port {port} or udp port {marker_port}"],
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert dump.stderr is not None
        assert "listening on" in dump.stderr.readline()
        sent = subprocess.run(
            [*QOTP, "send", address, "--streams", str(streams), "--bytes", str(size),
             "--mode", "echo", "--keylog", str(keys)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        # tcpdump writes what the kernel buffered a little later: stop it only once a
        # datagram sent after the transfer is in the file.
        for _ in range(100):
            marker.sendto(CAPTURE_END_MARKER, ("127.0.0.1", marker_port))
            time.sleep(0.05)
            if CAPTURE_END_MARKER in capture.read_bytes():
                break
        marker.close()
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
        if dump is not None:
            dump.send_signal(signal.SIGINT)
            dump.communicate(timeout=30)

    done = subprocess.run(
        [*QOTP, "decrypt", "--pcap", str(capture), "--keylog", str(keys), "--json",
         "--port", port, "--write", str(decrypted)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    decrypted_share = sum(record["ok"] for record in records) / len(records)
    print(f"decrypt --pcap: {len(records)} datagrams, {decrypted_share:.2%} decrypted; "
          f"{done.stderr.strip()}")  # fmt: skip
    assert decrypted_share >= 0.99, done.stderr
    assert any(record.get("segments", 1) > 1 for record in records), "no GSO run captured"
    assert {record["type"] for record in records[:2]} == {"InitSnd", "InitRcv"}
    assert all(record["ok"] for record in records[:2])
    assert {record.get("direction") for record in records if record["ok"]} == {
        "initiator",
        "responder",
    }

    # The same capture as pcapng (tshark converts it) decrypts the same.
    as_pcapng = tmp_path / "echo.pcapng"
    subprocess.run(
        [tshark, "-r", str(capture), "-F", "pcapng", "-w", str(as_pcapng)],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    again = subprocess.run(
        [*QOTP, "decrypt", "--pcap", str(as_pcapng), "--keylog", str(keys), "--json",
         "--port", port],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert [json.loads(line) for line in again.stdout.splitlines()] == records

    fields = ["qotp.type", "qotp.from_initiator", "qotp.stream_id", "qotp.offset",
              "qotp.data_length", "qotp.conn_id", "qotp.sn"]  # fmt: skip
    dissected = subprocess.run(
        [tshark, "-X", f"lua_script:{DISSECTOR}", "-r", str(decrypted), "-Y", "qotp",
         "-T", "fields", *(argument for name in fields for argument in ("-e", name))],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert dissected.returncode == 0, dissected.stderr
    rows = [line.split("\t") for line in dissected.stdout.splitlines()]
    assert len(rows) == len(records)
    assert {row[0] for row in rows} >= {"0", "1", "4"}
    assert {row[5] for row in rows} == {f"0x{records[0]['conn_id']:016x}"}
    # Every byte of every stream, both ways, is in the dissected data fields.
    ranges: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for message_type, from_initiator, stream_id, offset, length, *_ in rows:
        if message_type == "4" and stream_id and length and int(length):
            start = int(offset)
            ranges.setdefault((from_initiator, stream_id), []).append((start, start + int(length)))
    for direction in ("1", "0"):
        for stream_id in range(streams):
            covered = 0
            for start, end in sorted(ranges.get((direction, str(stream_id)), [])):
                if start > covered:
                    break
                covered = max(covered, end)
            assert covered == size, (direction, stream_id, covered)


# -- qotp decrypt --pcap: failures ----------------------------------------------------------


def write_pcap(path: Path, packets: list[CapturedPacket]) -> None:
    """A classic pcap (Ethernet, IPv4, UDP) of the packets, as tcpdump would write it."""
    import dpkt

    with open(path, "wb") as handle:
        writer = dpkt.pcap.Writer(handle, linktype=dpkt.pcap.DLT_EN10MB)
        for packet in packets:
            udp = dpkt.udp.UDP(
                sport=packet.source[1], dport=packet.destination[1], data=packet.payload
            )
            udp.ulen = len(udp)
            ip = dpkt.ip.IP(
                src=socket.inet_aton(packet.source[0]),
                dst=socket.inet_aton(packet.destination[0]),
                p=dpkt.ip.IP_PROTO_UDP,
                data=udp,
            )
            ip.len = len(ip)
            frame = dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
            writer.writepkt(bytes(frame), ts=packet.timestamp)


def test_decrypt_a_capture_with_a_key_log_of_other_connections_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It exited 0 with a 'not decrypted' line per datagram (18 KB for 131 datagrams)."""
    from qotp.cli import main

    packets, key_log = record_conversation()
    capture = tmp_path / "capture.pcap"
    write_pcap(capture, packets)
    other_log = tmp_path / "other.keylog"
    other_log.write_text(record_conversation(streams=1, size=100)[1])
    empty_log = tmp_path / "empty.keylog"
    empty_log.write_text("garbage line\n")
    for log, contents in ((other_log, "secret of other connections"), (empty_log, "no QOTP")):
        status = main(["decrypt", "--pcap", str(capture), "--keylog", str(log)])
        captured = capsys.readouterr()
        assert status == 1 and captured.out == "", captured.out[:500]
        (line,) = captured.err.splitlines()
        assert "has no secret for the connection in the capture" in line and contents in line
    # The right key log: every datagram decrypts, one line each, and a summary.
    right_log = tmp_path / "right.keylog"
    right_log.write_text(key_log)
    status = main(["decrypt", "--pcap", str(capture), "--keylog", str(right_log)])
    captured = capsys.readouterr()
    assert status == 0 and len(captured.out.splitlines()) == len(packets)
    assert f"{len(packets)} decrypted (100.0 %)" in captured.err


def test_decrypt_checks_write_before_the_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unwritable --write failed only after every line was printed."""
    from qotp.cli import main

    packets, key_log = record_conversation()
    capture = tmp_path / "capture.pcap"
    write_pcap(capture, packets)
    keys = tmp_path / "keys.log"
    keys.write_text(key_log)
    for out in (tmp_path / "missing" / "out.pcapng", tmp_path):
        status = main(
            ["decrypt", "--pcap", str(capture), "--keylog", str(keys), "--write", str(out)]
        )
        captured = capsys.readouterr()
        assert status == 1 and captured.out == ""
        (line,) = captured.err.splitlines()
        assert line.startswith(f"qotp decrypt: cannot write {out}: ")
    assert not (tmp_path / "missing").exists()
    written = tmp_path / "out.pcapng"
    status = main(
        ["decrypt", "--pcap", str(capture), "--keylog", str(keys), "--write", str(written)]
    )
    assert status == 0 and written.stat().st_size > 0
