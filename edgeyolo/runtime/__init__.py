"""Inference (floor 4): one ``Backend`` over PyTorch, ONNX Runtime and TensorRT, and the Detector.

- :mod:`~edgeyolo.runtime.backends`: ``open_backend(path)`` by suffix (``.pt``, ``.onnx``,
  ``.engine``); the PyTorch backend (:mod:`~edgeyolo.runtime.pytorch`) is imported for ``.pt``
  files only.
- :mod:`~edgeyolo.runtime.detector`: ``Detector``, frames in, boxes in frame pixels out.
- :mod:`~edgeyolo.runtime.onnxruntime`, :mod:`~edgeyolo.runtime.tensorrt`: the sessions / engine
  runner; :mod:`~edgeyolo.runtime.gpu`: TensorRT, pycuda and whether an engine fits this GPU.
- :mod:`~edgeyolo.runtime.capture`: cameras, streams and pipelines, newest frame first;
  :mod:`~edgeyolo.runtime.framecounter` and :mod:`~edgeyolo.runtime.latency`: a sender's frame
  counter and the age, in frames, of what a model processes.
- :mod:`~edgeyolo.runtime.manifest`: the export folder's ``manifest.json``;
  :mod:`~edgeyolo.runtime.thresholds`: NMS settings asked of a model against its own.

Nothing here imports a training module; this package itself imports nothing heavy.
"""
