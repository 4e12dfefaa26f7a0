"""Query-result cache (SPEC §11): policy, keys and backends, engine-neutral; engines feed it verdicts and bytes."""
