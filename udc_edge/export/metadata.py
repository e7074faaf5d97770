"""Keys of the ``metadata_props`` that export writes into an ONNX file and build reads back.

Torch-free, so a device without PyTorch can build engines from exported files.
"""

from __future__ import annotations

#: ONNX Runtime session options the graph needs (JSON object), found at export time.
SESSION_OPTIONS_KEY = "udc_edge.session_options"
