"""Traffic mirroring (SPEC §13): copies of sampled client transactions sent to a shadow cluster, off the client path."""
