"""Offline jobs behind the CLI: calibrate, evaluate, export."""
