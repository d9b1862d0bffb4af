"""Benchmark scripts that print figures; importable so tests can reuse their helpers."""
