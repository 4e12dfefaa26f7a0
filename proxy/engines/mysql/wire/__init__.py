"""Sans-IO MySQL client/server protocol: packets, handshake, OK/ERR/EOF, result sets, commands."""
