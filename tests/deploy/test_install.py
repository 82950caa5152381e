"""The deploy install, for real: a fresh venv with a plain ``pip install .`` (no extras).

torch must be absent there, and what runs on the device must work from an export folder alone:
``import edgeyolo``, ``edgeyolo detect --model``, ``edgeyolo bench --models`` (parity against
the stored reference detections), ``edgeyolo build`` (here: its one-line no-TensorRT error), and
the training commands must say in one line which extra to install. Packages come from the
registry as in any install (offline registries on CI, pip's cache after the first run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "100", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, **kw)


@pytest.fixture(scope="session")
def deploy_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with ``pip install <this checkout>`` and nothing else; its ``bin`` folder."""
    root = tmp_path_factory.mktemp("deploy")
    venv.EnvBuilder(with_pip=True).create(root / "venv")
    bin_dir = root / "venv" / "bin"
    src = root / "src"  # a copy of the package sources: the checkout's .venv and data stay out
    shutil.copytree(
        ROOT / "edgeyolo", src / "edgeyolo", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    got = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(src)])
    if got.returncode != 0:
        pytest.fail(f"pip install of the deploy package failed:\n{got.stdout}\n{got.stderr}")
    return bin_dir


def test_torch_is_absent_and_edgeyolo_imports(deploy_venv: Path) -> None:
    py = str(deploy_venv / "python")
    no_torch = _run([py, "-c", "import torch"])
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    got = _run(
        [py, "-c", "import edgeyolo, sys; print(edgeyolo.__version__, 'torch' in sys.modules)"]
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.split()[1] == "False"


def test_detect_runs_an_exported_graph(deploy_venv: Path, exported: Path, tmp_path: Path) -> None:
    image = tmp_path / "frame.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    got = _run([str(deploy_venv / "edgeyolo"), "detect", str(image), "--model",
                str(exported / "model_fp32.onnx"), "--out", str(out), "--json"])  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    dets = json.loads((out / "detections.json").read_text())
    assert len(dets) == 1 and dets[0]["detections"] and (out / "frame.jpg").is_file()


def test_bench_without_checkpoint_reports_parity_from_stored_references(
    deploy_venv: Path, exported: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    got = _run([str(deploy_venv / "edgeyolo"), "bench", "--models", str(exported), "--runs", "3",
                "--warmup", "1", "--no-isolate", "--out", str(out), "--no-progress"])  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    result = json.loads((out / "bench.json").read_text())
    arts = result["artifacts"]
    assert set(arts) == {"model_fp32.onnx", "model_fp16.onnx"}
    for key, a in arts.items():
        p = a["parity"]
        assert p["against"].startswith("the ") and p["passed"] is True, (key, p)
        assert p["images"] > 0 and a["map50"] is None
    fp32 = arts["model_fp32.onnx"]["parity"]
    assert fp32["matched_fraction"] == 1.0 and fp32["min_iou"] > 0.999  # ORT fp32 reproduces
    assert any("mAP: no --data" in n for n in result["not_available"])


def test_build_without_tensorrt_stops_in_one_line(deploy_venv: Path, exported: Path) -> None:
    got = _run([str(deploy_venv / "edgeyolo"), "build", str(exported / "model_fp32.onnx")])
    assert got.returncode == 1
    lines = [ln for ln in got.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "TensorRT" in lines[0], got.stderr
    assert "Traceback" not in got.stderr + got.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--data", "data.yaml"],
        ["export", "--weights", "best.pt"],
        ["data", "mnist", "data/mnist"],
    ],
)
def test_training_commands_name_the_extra(
    deploy_venv: Path, args: list[str], tmp_path: Path
) -> None:
    got = _run([str(deploy_venv / "edgeyolo"), *args], cwd=tmp_path)
    assert got.returncode == 1
    lines = [ln for ln in got.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "edgeyolo[train]" in lines[0], got.stderr


def test_camera_example_runs_headless_on_a_video(
    deploy_venv: Path, exported: Path, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    rng = np.random.default_rng(1)
    for _ in range(5):
        writer.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "annotated.mp4"
    env_no_display = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    got = subprocess.run(
        [str(deploy_venv / "python"), str(ROOT / "examples" / "camera.py"),
         str(exported / "model_fp32.onnx"), str(clip), "--out", str(out)],
        capture_output=True, text=True, env=env_no_display, timeout=600,
    )  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    assert "no window" in got.stdout and out.is_file()
    cap = cv2.VideoCapture(str(out))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == 5
