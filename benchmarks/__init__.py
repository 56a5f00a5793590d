"""Benchmarks: each prints a readable table and writes JSON; targets are ratios from one run."""
