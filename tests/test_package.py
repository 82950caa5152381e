import subprocess
import sys


def test_import_is_light_and_lazy_names_resolve():
    code = (
        "import sys, edgeyolo; "
        "assert 'torch' not in sys.modules, 'import edgeyolo pulled in torch'; "
        "assert 'tensorrt' not in sys.modules and 'pycuda' not in sys.modules; "
        "from edgeyolo import TrainConfig, Trainer, build_model; "
        "from edgeyolo.train import train; "
        "assert TrainConfig().model == 'yolov3-tiny'; "
        "assert callable(train) and callable(build_model) and callable(Trainer)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_is_an_attribute_error():
    import edgeyolo

    try:
        edgeyolo.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")


#: What the deploy install (no torch) runs: build, bench, detect, the Detector and their parts.
DEPLOY_MODULES = (
    "edgeyolo.cli",
    "edgeyolo.detections",
    "edgeyolo.data.letterbox",
    "edgeyolo.data.images",
    "edgeyolo.data.formats",
    "edgeyolo.evaluate.predict",
    "edgeyolo.metrics.parity",
    "edgeyolo.metrics.coco_map",
    "edgeyolo.runtime.backends",
    "edgeyolo.runtime.detector",
    "edgeyolo.runtime.conformance",
    "edgeyolo.runtime.references",
    "edgeyolo.build",
    "edgeyolo.bench.runner",
    "edgeyolo.detect",
)

_BLOCK_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "onnxsim"):
            raise ImportError(f"{name} is blocked: the deploy install has no torch")
sys.meta_path.insert(0, Block())
"""


def test_deploy_side_imports_no_torch() -> None:
    """Every deploy-side module imports with torch, torchvision and onnxsim made unimportable
    (the real torch-free install is tests/deploy/test_install.py)."""
    code = (
        _BLOCK_TORCH
        + "\n".join(f"import {m}" for m in DEPLOY_MODULES)
        + (
            "\nimport edgeyolo.build.references, edgeyolo.bench.scoring\n"
            "assert not any(m.split('.')[0] in ('torch', 'torchvision') for m in sys.modules)\n"
        )
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_block_itself_works() -> None:
    code = _BLOCK_TORCH + "import edgeyolo.postprocess\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode != 0 and "deploy install has no torch" in run.stderr
