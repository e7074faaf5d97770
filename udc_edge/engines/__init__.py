"""One Engine interface; torch, onnxruntime and tensorrt backends."""
