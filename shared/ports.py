"""Free TCP ports on loopback, for processes started on this machine (the local stack's
backing services, a multi-worker training's processes, the tests' and benchmarks'
servers)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """One port free now (two calls may give the same one: use free_ports for several)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free now: every probe stays bound until all are chosen."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()
