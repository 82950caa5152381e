"""Optional heavy dependencies, imported on first use (as Polygraphy's ``mod.lazy_import``).

Every import of tensorrt, pycuda, matplotlib, and of torch on the deploy side goes through
:func:`lazy_import`, at module level::

    trt = lazy_import("tensorrt", min_version="8.6", install="...", error=TensorRTNotAvailableError)

``trt`` imports nothing until an attribute is read (or :meth:`LazyModule.load` is called); then
a missing or too-old package raises one error naming the package, the version needed and how to
install it, instead of a bare ``ImportError`` from deep inside a function. The import is not
cached here (``sys.modules`` already is), so a test may swap the module out.
"""

from __future__ import annotations

import importlib
import re
import sys
from importlib import metadata
from types import ModuleType
from typing import Any

from edgeyolo.errors import EdgeYoloError, MissingDependencyError

__all__ = ["CV2", "TORCH", "LazyModule", "lazy_import", "version_tuple"]


def version_tuple(version: str) -> tuple[int, ...]:
    """``"10.3.0.26"`` → ``(10, 3, 0, 26)``; stops at the first part that is not a number
    (``"2.14.1+cu130"`` → ``(2, 14, 1)``)."""
    out = []
    for part in str(version).split("."):
        m = re.match(r"\d+", part)
        if m is None:
            break
        out.append(int(m.group()))
        if m.end() != len(part):
            break
    return tuple(out)


def _installed_version(top: str) -> str | None:
    """The version of the imported top-level package ``top``: its ``__version__``, else the
    installed distribution's (pycuda has no ``__version__``); ``None`` when neither says."""
    module = sys.modules.get(top)
    version = getattr(module, "__version__", None)
    if version is not None:
        return str(version)
    try:
        return metadata.version(top)
    except (metadata.PackageNotFoundError, ValueError):
        return None


def _is_our_bug(exc: BaseException) -> bool:
    """An ``ImportError`` raised by edgeyolo's own code (``cannot import name 'x' from
    'edgeyolo.y'``): a bug to show as it is, not a missing package to install."""
    name = getattr(exc, "name", None) or ""
    return (
        type(exc) is ImportError and name.split(".")[0] == "edgeyolo"  # not ModuleNotFoundError
    )


class LazyModule:
    """A module imported on first attribute access; see the module docstring.

    Args:
        name: the import name (``"pycuda.driver"``, ``"matplotlib.pyplot"``).
        min_version: the oldest version that works, compared with the top-level package's
            version (``__version__``, else its distribution's); ``None``: any. A package that
            states no version is not refused.
        install: what to run to get it (the message's last part).
        error: the :class:`EdgeYoloError` subclass raised when it cannot be had.
        needed_for: what it is needed for, for the message (``"the TensorRT backend"``).
    """

    def __init__(
        self,
        name: str,
        *,
        min_version: str | None = None,
        install: str = "",
        error: type[EdgeYoloError] = MissingDependencyError,
        needed_for: str = "",
    ) -> None:
        self.name = name
        self.min_version = min_version
        self.install = install or f"pip install {name.split('.')[0]}"
        self.error = error
        self.needed_for = needed_for
        #: The module object whose version passed; another object (a test's stand-in, a
        #: re-import) is checked again.
        self._verified: ModuleType | None = None

    def _want(self) -> str:
        need = f"{self.name} >= {self.min_version}" if self.min_version else self.name
        return need + (f" (needed for {self.needed_for})" if self.needed_for else "")

    def load(self) -> ModuleType:
        """The module itself, imported now.

        Raises:
            error: the package is missing, its libraries fail to load (``OSError``), or its
                version is below ``min_version``.
        """
        try:
            module = importlib.import_module(self.name)  # sys.modules first: cheap when loaded
        except (ImportError, OSError) as exc:  # OSError: bindings found, their libraries not
            if _is_our_bug(exc):
                raise
            reason = " ".join(str(exc).split())
            raise self.error(
                f"{self._want()} cannot be imported ({type(exc).__name__}: {reason}); install "
                f"it: {self.install}"
            ) from exc
        if module is self._verified:  # its version was checked already (attribute reads)
            return module
        have = _installed_version(self.name.split(".")[0])
        too_old = have is not None and self.min_version is not None
        if too_old and version_tuple(have) < version_tuple(self.min_version):
            raise self.error(
                f"{self._want()} is needed, this machine has {have}; install a newer one: "
                f"{self.install}"
            )
        self._verified = module
        return module

    def available(self) -> bool:
        """Whether :meth:`load` would succeed."""
        try:
            self.load()
        except EdgeYoloError:
            return False
        return True

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)  # copy/pickle/inspect probes: no import on their account
        return getattr(self.load(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self.name!r}>"


def lazy_import(
    name: str,
    *,
    min_version: str | None = None,
    install: str = "",
    error: type[EdgeYoloError] = MissingDependencyError,
    needed_for: str = "",
) -> LazyModule:
    """A :class:`LazyModule` for ``name``; nothing is imported until it is used."""
    return LazyModule(
        name, min_version=min_version, install=install, error=error, needed_for=needed_for
    )


#: torch, for the parts the deploy side may run without it (bench's compute roof, the GPU's name):
#: the train side imports torch directly.
TORCH = lazy_import(
    "torch",
    min_version="2.4",
    install="pip install torch torchvision (or `pip install edgeyolo[train]`)",
)

#: OpenCV, for every image, video and camera on the deploy side. Not a plain dependency: pip's
#: opencv-python-headless would shadow a system OpenCV (JetPack's, Debian's ``python3-opencv``:
#: GStreamer, CSI cameras, windows) in a ``--system-site-packages`` venv, so it is the
#: ``opencv`` extra, and a machine with neither gets this one line instead of an ImportError.
CV2 = lazy_import(
    "cv2",
    min_version="4.6",
    install="pip install 'edgeyolo[opencv]', or use the system's OpenCV (JetPack's, or "
    "apt install python3-opencv) from a venv made with --system-site-packages",
    needed_for="images, video and cameras",
)
