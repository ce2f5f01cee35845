"""tools.local_server.free_port: the port stays reserved until the server binds it."""

from __future__ import annotations

import errno
import socket

import pytest

from tools.local_server import HOST, free_port


def test_a_free_port_is_refused_to_others_and_taken_by_a_server() -> None:
    port = free_port()
    # Anyone binding without SO_REUSEADDR (what a stray bind of that port does) is refused.
    with socket.socket() as other, pytest.raises(OSError) as refused:
        other.bind((HOST, port))
    assert refused.value.errno == errno.EADDRINUSE
    # A server (SO_REUSEADDR, as uvicorn, BentoML and nginx set it) binds and listens on it.
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((HOST, port))
        server.listen()
        assert server.getsockname()[1] == port


def test_reserved_ports_are_not_handed_out_again() -> None:
    reserved = {free_port() for _ in range(50)}
    assert len(reserved) == 50
    handed_out = set()
    # 3,000 binds to port 0 (with reuse, too): without the reservation, about 99 % of such
    # runs would be handed one of the 50 (ephemeral range of ~28,000 ports).
    for _ in range(3000):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((HOST, 0))
            handed_out.add(probe.getsockname()[1])
    assert not handed_out & reserved
    assert not {free_port() for _ in range(50)} & reserved
