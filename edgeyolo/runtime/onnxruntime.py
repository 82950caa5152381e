"""ONNX Runtime session as a context manager (CPU by default; CUDA when asked and installed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from edgeyolo.errors import ExportError

__all__ = ["OnnxRuntimeSession"]


class OnnxRuntimeSession:
    """``with OnnxRuntimeSession(path) as s: outputs = s.run(images)``.

    Args:
        model: path of an ONNX file, or the serialized bytes of one.
        threads: intra-op threads (``None``: ONNX Runtime's default, all cores). Pin it when
            timing next to PyTorch in one process; they fight over cores otherwise.
        providers: execution providers, default ``["CPUExecutionProvider"]``.
    """

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        self.model = model
        self.threads = threads
        self.providers = list(providers)
        self._session = None

    def __enter__(self) -> OnnxRuntimeSession:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.threads is not None:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        src = self.model if isinstance(self.model, bytes) else str(self.model)
        name = "<bytes>" if isinstance(self.model, bytes) else str(self.model)
        if not isinstance(self.model, bytes) and not Path(self.model).is_file():
            raise ExportError(f"{name}: no such ONNX file; run `edgeyolo export` first")
        try:
            self._session = ort.InferenceSession(src, opts, providers=self.providers)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"{name}: ONNX Runtime cannot load this graph: {first}") from e
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._session = None

    @property
    def session(self):  # -> onnxruntime.InferenceSession
        if self._session is None:
            raise RuntimeError("use OnnxRuntimeSession as a context manager (with ... as s)")
        return self._session

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run on ``images`` (``float32[B, 3, H, W]``); returns every output by name."""
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(images, np.float32)})
        return dict(zip(self.output_names, outs, strict=True))
