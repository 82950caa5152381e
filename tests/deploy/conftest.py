"""Fixtures of the deploy tests, which must also run where torch is absent.

``deploy_export``: the export folder the tests read (fp32, fp16, int8 graphs + references). In the
training venv it is made here (:mod:`tests.deploy.make_export`); a deploy-only venv (the oldest
and system twins of scripts/twin.sh) passes one made beforehand in ``EDGEYOLO_TEST_EXPORT``, and
without either the tests skip, saying so.

``deploy_venv``: the ``bin`` folder of the venv the deploy commands run from. By default a fresh
venv with ``pip install .`` (tests/deploy/test_install.py); ``EDGEYOLO_DEPLOY_VENV=current`` uses
the interpreter running the tests (a twin that installed the package itself).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

EXPORT_ENV = "EDGEYOLO_TEST_EXPORT"
VENV_ENV = "EDGEYOLO_DEPLOY_VENV"


@pytest.fixture(scope="session")
def deploy_export(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A private copy of the deploy export folder (tests may damage their copy's files)."""
    out = tmp_path_factory.mktemp("deploy_export") / "export"
    given = os.environ.get(EXPORT_ENV)
    if given:
        if not (Path(given) / "manifest.json").is_file():
            pytest.fail(f"{EXPORT_ENV}={given}: no manifest.json there")
        return Path(shutil.copytree(given, out))
    if importlib.util.find_spec("torch") is None:
        pytest.skip(
            f"no torch to export a model and no {EXPORT_ENV}: make one with "
            "`python -m tests.deploy.make_export DIR` in the training venv"
        )
    from edgeyolo.config import to_dict
    from edgeyolo.models.checkpoint import save_checkpoint
    from tests.deploy.make_export import make_deploy_export
    from tests.export.conftest import busy_model

    net = busy_model()
    ckpt = tmp_path_factory.mktemp("deploy_ckpt") / "busy.pt"
    save_checkpoint(ckpt, {"model_config": to_dict(net.config), "model": net.state_dict()})
    calib = request.getfixturevalue("mnist_small_yaml").parent / "images" / "train"
    return make_deploy_export(out, calib, ckpt)
