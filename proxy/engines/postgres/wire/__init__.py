"""PostgreSQL frontend/backend protocol v3: framing, messages, authentication, relay tracking."""
