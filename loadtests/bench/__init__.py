"""Side-by-side benchmarks of the gateway against its peers (see docs/benchmarks.md)."""
