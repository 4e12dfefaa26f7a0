"""LOAD DATA LOCAL INFILE through a MySQL client session: the client's file packets relayed to its server as they are."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .session import MysqlClientSession


def relay_infile(session: MysqlClientSession, data: bytes) -> bytes:
    """LOAD DATA LOCAL INFILE: the client's file packets go to the server as they are, up to the
    empty packet that ends the file; returns what follows it."""
    server = session.server
    assert server is not None
    if session._infile_buf:
        data = session._infile_buf + data
        session._infile_buf = b""
    pos = 0
    size = len(data)
    if session._infile_skip > 1:   # the rest of a file packet
        n = min(session._infile_skip - 1, size)
        session._infile_skip -= n
        pos = n
    session._infile_skip = max(session._infile_skip, 1)
    while True:
        if session._infile_skip > 1:
            server.write(data)
            return b""
        if size - pos < 4:
            server.write(data[:pos])
            session._infile_buf = data[pos:]
            return b""
        length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
        end = pos + 4 + length
        if length == 0:
            server.write(data[:end])
            session._infile_skip = 0
            return data[end:]
        if end > size:
            server.write(data)
            session._infile_skip = end - size + 1
            return b""
        pos = end
