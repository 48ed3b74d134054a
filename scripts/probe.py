#!/usr/bin/env python3
"""Standard-library probes for the local services, used by scripts/kafka.sh and scripts/redis.sh.

They must work before parley (or anything else) is installed, so they speak the wire protocols
directly:

    probe.py port-free HOST PORT        exit 0 if nothing listens on HOST:PORT, 1 (and who) if taken
    probe.py kafka HOST PORT [TIMEOUT]  exit 0 once the broker answers a Metadata request naming
                                        at least one broker; 1 on time-out
    probe.py redis HOST PORT [TIMEOUT]  exit 0 once Redis answers PING with PONG
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time

# Metadata v4 is a non-flexible version every broker since Kafka 1.0 serves, 4.x included.
_METADATA_API_KEY = 3
_METADATA_VERSION = 4


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


def port_free(host: str, port: int) -> bool:
    """True when no process accepts connections on host:port."""
    try:
        with _connect(host, port, 0.5):
            return False
    except OSError:
        pass
    # Nothing answers, but a listener on 0.0.0.0 can still block bind(). SO_REUSEADDR, as servers
    # (the JVM, Redis) set it, so that connections of a just-stopped server in TIME_WAIT do not count.
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        buf += chunk
    return buf


def kafka_metadata(host: str, port: int, timeout: float = 2.0) -> list[tuple[int, str, int]]:
    """Send one Metadata request and return the brokers it lists as (node_id, host, port)."""
    client_id = b"parley-probe"
    correlation_id = 7
    header = struct.pack(">hhih", _METADATA_API_KEY, _METADATA_VERSION, correlation_id, len(client_id))
    body = struct.pack(">ib", -1, 0)  # topics = null (all), allow_auto_topic_creation = false
    payload = header + client_id + body
    with _connect(host, port, timeout) as sock:
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        (size,) = struct.unpack(">i", _read_exact(sock, 4))
        data = _read_exact(sock, size)
    got_correlation, _throttle_ms, n_brokers = struct.unpack_from(">iii", data, 0)
    if got_correlation != correlation_id:
        raise ConnectionError(f"correlation id {got_correlation} != {correlation_id}")
    offset = 12
    brokers = []
    for _ in range(n_brokers):
        node_id, host_len = struct.unpack_from(">ih", data, offset)
        offset += 6
        broker_host = data[offset : offset + host_len].decode()
        offset += host_len
        (broker_port, rack_len) = struct.unpack_from(">ih", data, offset)
        offset += 6 + max(rack_len, 0)
        brokers.append((node_id, broker_host, broker_port))
    return brokers


def redis_ping(host: str, port: int, timeout: float = 2.0) -> bool:
    with _connect(host, port, timeout) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        reply = sock.recv(64)
    return reply.startswith(b"+PONG")


def _wait(check, deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            if check():
                return True
        except (OSError, ConnectionError, struct.error):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _who_listens(port: int) -> str:
    """Best effort: the pid and command line of the process listening on a TCP port (Linux)."""
    try:
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for line in f.readlines()[1:]:
                    parts = line.split()
                    if int(parts[1].split(":")[1], 16) == port and parts[3] == "0A":  # LISTEN
                        inodes.add(parts[9])
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                        return f"pid {pid}: {cmd[:160]}"
            except OSError:
                continue
    except OSError:
        pass
    return "an unknown process"


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    what, host, port = argv[0], argv[1], int(argv[2])
    timeout = float(argv[3]) if len(argv) > 3 else 0.0
    if what == "port-free":
        if port_free(host, port):
            return 0
        print(f"{host}:{port} is in use by {_who_listens(port)}", file=sys.stderr)
        return 1
    if what == "kafka":
        return 0 if _wait(lambda: bool(kafka_metadata(host, port)), timeout) else 1
    if what == "redis":
        return 0 if _wait(lambda: redis_ping(host, port), timeout) else 1
    print(f"unknown probe {what!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
