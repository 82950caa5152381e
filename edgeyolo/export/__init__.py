"""Export (floor 6): the deploy graph (decode + NMS inside), fp16/int8 variants, TensorRT engines.

Import the stage you need (``edgeyolo.export.pipeline.export_model`` for the whole road); this
package itself imports nothing. The manifest it writes, and the checks an engine must pass where it
runs, live on the deploy side (:mod:`edgeyolo.runtime.manifest`, :mod:`edgeyolo.runtime.gpu`).
"""
