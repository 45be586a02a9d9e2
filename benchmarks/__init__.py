"""Side-by-side load benchmarks: `make bench` (see docs/benchmarks.md)."""
