"""Benchmarks: the claim and HTTP benchmarks, the naive Django + DRF peer and `make bench`'s suite.
Tooling: no runtime app imports it; it reaches the apps only through their public functions."""
