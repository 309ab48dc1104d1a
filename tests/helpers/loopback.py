"""What the loopback tests need to know about this host."""

from __future__ import annotations

import socket

import pytest


def ipv6_loopback() -> bool:
    """Whether ::1 can be bound (containers often run without IPv6)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAVE_IPV6 = ipv6_loopback()
needs_ipv6 = pytest.mark.skipif(not HAVE_IPV6, reason="::1 is not available on this host")
