"""Benchmarks: `qlam bench sim` (simulator training throughput against PennyLane)."""
