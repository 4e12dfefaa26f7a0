"""The PostgreSQL engine: wire codec, logins, session state, server connections, probes and failover."""
