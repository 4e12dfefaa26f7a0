"""dbproxy: a connection proxy and pooler for PostgreSQL and MySQL/MariaDB."""

__version__ = "0.1.0"
