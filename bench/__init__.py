"""Benchmarks: pgbench against PostgreSQL directly, through dbproxy and through PgBouncer."""
