"""Benchmarks: each prints a readable table and writes its result as ``X.json`` with the same table
beside it as ``X.md`` (:func:`admn_ros.benchmarks.report.write_result`); targets are ratios from one run."""
