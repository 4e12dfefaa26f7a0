"""The MySQL / MariaDB engine: wire codec, authentication, session state and server connections."""
