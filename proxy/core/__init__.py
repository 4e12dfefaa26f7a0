"""What every client goes through whatever its engine: clusters and pools, users, the client session core."""
