"""Measure every artifact the same way: accuracy, params, MACs, sizes, latency, throughput."""
