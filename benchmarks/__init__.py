"""Benchmarks: scripts that print figures measured side by side (see docs/benchmarks.md)."""
