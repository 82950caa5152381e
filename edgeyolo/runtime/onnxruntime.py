"""ONNX Runtime session as a context manager (CPU by default; CUDA when asked and installed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import onnxruntime as ort

from edgeyolo.errors import ModelFileError, RuntimeBackendError

__all__ = ["OnnxRuntimeSession"]


class OnnxRuntimeSession:
    """``with OnnxRuntimeSession(path) as s: outputs = s.run(images)``.

    Args:
        model: path of an ONNX file, or the serialized bytes of one.
        threads: intra-op threads (``None``: ONNX Runtime's default, all cores). Pin it when
            timing next to PyTorch in one process; they fight over cores otherwise.
        providers: execution providers, default ``["CPUExecutionProvider"]``.
        name: what error messages call the model (default: its path, or ``<bytes>``); give the
            file's path when ``model`` holds bytes derived from it.

    Raises:
        ModelFileError: (on entering) the file is missing, or ONNX Runtime cannot load it.
        RuntimeBackendError: (from :meth:`run`) ONNX Runtime failed on the given images.
    """

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        name: str | None = None,
    ) -> None:
        self.model = model
        if name is None:
            name = "<bytes>" if isinstance(model, bytes) else str(model)
        self.name = name
        self.threads = threads
        self.providers = list(providers)
        self._session = None

    def __enter__(self) -> OnnxRuntimeSession:

        opts = ort.SessionOptions()
        if self.threads is not None:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        src = self.model if isinstance(self.model, bytes) else str(self.model)
        name = self.name
        if not isinstance(self.model, bytes) and not Path(self.model).is_file():
            raise ModelFileError(f"{name}: no such ONNX file; run `edgeyolo export` first")
        try:
            self._session = ort.InferenceSession(src, opts, providers=self.providers)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf types
            raise ModelFileError(
                f"{name}: ONNX Runtime cannot load this graph ({_first_line(e)}); the file is "
                "damaged or not an ONNX model: copy it again, or export it again with "
                "`edgeyolo export`"
            ) from e
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
        """Run on ``images`` (``float32[B, 3, H, W]``); returns every output by name.

        Raises:
            RuntimeBackendError: ONNX Runtime failed (e.g. a shape the graph does not take).
        """
        x = np.ascontiguousarray(images, np.float32)
        session = self.session
        try:
            outs = session.run(None, {self.input_name: x})
        except Exception as e:  # ORT's Fail/InvalidArgument/RuntimeException types
            want = session.get_inputs()[0].shape
            raise RuntimeBackendError(
                f"{self.name}: ONNX Runtime failed on images of shape {list(x.shape)} (the graph "
                f"takes {want}): {_first_line(e)}"
            ) from e
        return dict(zip(self.output_names, outs, strict=True))


def _first_line(e: BaseException) -> str:
    """The first non-empty line of ``e``'s message, or its type's name."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
