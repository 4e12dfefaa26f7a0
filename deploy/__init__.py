"""Local deployment helpers: throwaway PostgreSQL clusters and the `make demo` launcher."""
