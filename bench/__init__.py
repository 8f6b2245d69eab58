"""Benchmarks run by `make bench`: each writes bench/results/<name>.json, `bench.report` renders them all."""
