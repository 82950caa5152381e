"""Backends that run an exported model (ONNX Runtime now; TensorRT and the Detector API next)."""
