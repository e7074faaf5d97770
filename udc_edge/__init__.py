"""udc-edge: under-display-camera restorers from PyTorch to robust edge engines."""

__version__ = "0.1.0"
