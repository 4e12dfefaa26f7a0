"""TLS for dbproxy: SSL contexts from the config, the client-side TLS layer, test and demo certificates."""
