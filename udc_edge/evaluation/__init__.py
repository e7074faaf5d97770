"""Metrics, reports and figures; later latency benchmarks and robustness parity."""
