"""Foundations every layer uses: errors, atomic file io, progress, timing, metrics, figures.

Imports nothing of udc_edge (the import contract in pyproject.toml checks it)."""
