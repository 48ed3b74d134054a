"""ONNX Runtime: the CPU engine everywhere, and a CUDA engine where onnxruntime-gpu is installed."""
