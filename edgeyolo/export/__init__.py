"""Export: the deploy graph (decode + NMS inside), fp16/int8 variants, TensorRT engines, manifest.

Import the stage you need (``edgeyolo.export.pipeline.export_model`` for the whole road); nothing
heavy (onnx, onnxruntime, tensorrt) is imported by this package itself.
"""
