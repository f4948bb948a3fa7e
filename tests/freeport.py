"""Free TCP ports on 127.0.0.1, for every test suite and the bench."""

import collections
import socket

_handed_out = collections.deque(maxlen=256)


def free_port():
    """A port nothing listens on now, and not one handed out lately: two
    bind(0) calls in a row may get the same free port (a rules file once
    got one port for both its listener and its admin)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.append(port)
            return port
