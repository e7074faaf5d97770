"""Evaluation of restorers: robustness tables (udc-edge eval) and restoring files with metrics."""
