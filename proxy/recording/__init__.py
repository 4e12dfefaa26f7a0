"""Recording client traffic to a file and replaying it (SPEC §13): format, recorder (proxy side), replay (CLI)."""
