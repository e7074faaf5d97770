"""The package version (pyproject.toml says the same), here so any layer can record it."""

__version__ = "0.1.0"
