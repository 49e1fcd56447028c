"""Benchmarks: run on demand (`make bench`), never part of `make test`."""
