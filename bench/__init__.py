"""Tether benchmarks. `make bench` (or `python -m bench`) prints one JSON document."""
