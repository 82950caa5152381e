"""edgeyolo: YOLOv3 from labelled images to a TensorRT engine, with proof that the engine matches.

Importing this package is cheap and has no side effects: heavy or optional modules (torch-based
training, tensorrt, pycuda) are imported by the functions that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"
