"""asyncio protocols that feed bytes between sockets and the sans-IO codecs."""
