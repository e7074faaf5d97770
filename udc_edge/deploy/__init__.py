"""Deployment: latency bench, host info, robustness-parity verify, bundles, reference sets."""
