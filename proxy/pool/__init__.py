"""Server-connection pools: LIFO idle list, FIFO waiters, limits, timeouts and generations."""
