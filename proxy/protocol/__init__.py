"""Sans-IO wire-protocol codecs: bytes in, events out; no sockets, no asyncio, no clock."""
