"""torch -> ONNX export with parity checks."""
