"""Live sources on loopback: a real RTSP server (``scripts/rtsp_server.py`` under the system
python, which has GStreamer's ``gi``) and a small exported model to run ``edgeyolo detect`` on it.

Under an interpreter without torch (the system python, a deploy-only twin) the model comes from
``EDGEYOLO_LIVE_MODEL`` (an exported ``.onnx``) or ``EDGEYOLO_TEST_EXPORT``, as for tests/deploy
(a folder made by ``python -m tests.deploy.make_export DIR`` in the training venv; its
``model_fp32.onnx``), or the tests that need it skip. ``EDGEYOLO_REQUIRE_LIVE=1`` turns every skip
here (no server, an OpenCV backend or the model missing) into a failure: for a device's twin."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live.rtsp import SERVER_PYTHON, RtspServer, server_problem, skip_or_fail

EXPORT_ENV = "EDGEYOLO_TEST_EXPORT"
MODEL_ENV = "EDGEYOLO_LIVE_MODEL"

try:  # the export fixtures need torch and the training side of edgeyolo
    from tests.runtime.conftest import (  # noqa: F401
        busy_checkpoint,
        calib_folder,
        exported,
        mnist_images,
    )

    EXPORT_PROBLEM: str | None = None
except ImportError as e:
    EXPORT_PROBLEM = f"exporting a model needs torch and edgeyolo[train] ({e})"


@pytest.fixture(scope="session")
def rtsp_python() -> str:
    """The python that runs the RTSP server; skips when it lacks GStreamer or its plugins."""
    problem = server_problem()
    if problem is not None:
        skip_or_fail(problem)
    return SERVER_PYTHON


@pytest.fixture
def rtsp_server_factory(rtsp_python: str) -> Iterator[Callable[..., RtspServer]]:
    """``make(width=, height=, fps=, counter=, lifetime=)`` → a started :class:`RtspServer`;
    every server made is stopped at the end of the test."""
    made: list[RtspServer] = []

    def make(**options: Any) -> RtspServer:
        server = RtspServer(python=rtsp_python, **options)
        made.append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture
def rtsp_server(rtsp_server_factory: Callable[..., RtspServer]) -> RtspServer:
    """A started 320x240 30 fps server (``.url``, ``.stop()``, ``.restart()`` on the same port)."""
    return rtsp_server_factory()


@pytest.fixture(scope="session")
def live_model(request: pytest.FixtureRequest) -> Path:
    """An exported fp32 ``.onnx`` (128 px, 10 classes): ``EDGEYOLO_LIVE_MODEL``, else from
    ``EDGEYOLO_TEST_EXPORT``, else the ``exported`` fixture's."""
    model_env = os.environ.get(MODEL_ENV)
    if model_env:
        if not Path(model_env).is_file():
            pytest.fail(f"{MODEL_ENV}={model_env}: no such file")
        return Path(model_env)
    given = os.environ.get(EXPORT_ENV)
    if given:
        model = Path(given) / "model_fp32.onnx"
        if not model.is_file():
            pytest.fail(f"{EXPORT_ENV}={given}: no model_fp32.onnx there")
        return model
    if EXPORT_PROBLEM is not None:
        skip_or_fail(
            f"{EXPORT_PROBLEM}, and neither {MODEL_ENV} nor {EXPORT_ENV}: make an export with "
            "`python -m tests.deploy.make_export DIR` in the training venv"
        )
    folder: Path = request.getfixturevalue("exported")
    return folder / "model_fp32.onnx"
