"""The deploy install, for real: a fresh venv with a plain ``pip install .`` (no extras).

torch must be absent there, and what runs on the device must work from an export folder alone:
``import edgeyolo``, ``edgeyolo detect --model``, ``edgeyolo bench --models`` (parity against
the stored reference detections), ``edgeyolo build`` (here: its one-line no-TensorRT error), and
the training commands must say in one line which extra to install. Without any OpenCV (the plain
install brings none: a Jetson has its own) the commands that need one say so in one line; the
rest of the tests run after ``pip install .[opencv]``. Packages come from the registry as in any
install (pip's cache after the first run).

``EDGEYOLO_DEPLOY_VENV=current`` runs the same tests against the interpreter running pytest: the
oldest and system twins of ``scripts/twin.sh`` (a Python 3.10 venv with the oldest versions
allowed; a ``--system-site-packages`` venv over the system's OpenCV and numpy 1.x).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.deploy.conftest import VENV_ENV

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "100", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, **kw)


def _one_error_line(got: subprocess.CompletedProcess[str]) -> str:
    """The single ``error:`` line a failed command printed (asserted to be the only one)."""
    lines = [ln for ln in got.stderr.splitlines() if ln.strip()]
    assert got.returncode == 1, got.stdout + got.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), got.stderr
    assert "Traceback" not in got.stderr + got.stdout
    return lines[0]


@dataclass(frozen=True)
class DeployVenv:
    """``bin``: the venv's bin folder; ``no_opencv``: ``edgeyolo detect`` on an image before
    OpenCV was installed (``None`` for a twin's own venv, which has its OpenCV)."""

    bin: Path
    no_opencv: subprocess.CompletedProcess[str] | None


def _frame(folder: Path) -> Path:
    image = folder / "frame.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(image)
    return image


@pytest.fixture(scope="session")
def deploy_venv(tmp_path_factory: pytest.TempPathFactory, deploy_export: Path) -> DeployVenv:
    """A venv with ``pip install <this checkout>``, then its ``opencv`` extra."""
    if os.environ.get(VENV_ENV) == "current":
        return DeployVenv(Path(sys.executable).parent, None)
    root = tmp_path_factory.mktemp("deploy")
    venv.EnvBuilder(with_pip=True).create(root / "venv")
    bin_dir = root / "venv" / "bin"
    src = root / "src"  # a copy of the package sources: the checkout's .venv and data stay out
    shutil.copytree(
        ROOT / "edgeyolo", src / "edgeyolo", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "-q"]
    got = _run([*pip, str(src)])
    if got.returncode != 0:
        pytest.fail(f"pip install of the deploy package failed:\n{got.stdout}\n{got.stderr}")
    model = str(deploy_export / "model_fp32.onnx")
    no_opencv = _run(
        [str(bin_dir / "edgeyolo"), "detect", str(_frame(root)), "--model", model, "--out", "o"],
        cwd=root,
    )
    got = _run([*pip, f"{src}[opencv]"])
    if got.returncode != 0:
        pytest.fail(f"pip install of the opencv extra failed:\n{got.stdout}\n{got.stderr}")
    return DeployVenv(bin_dir, no_opencv)


def test_without_opencv_detect_names_the_extra_in_one_line(deploy_venv: DeployVenv) -> None:
    if deploy_venv.no_opencv is None:
        pytest.skip("this venv is a twin's, with its own OpenCV")
    line = _one_error_line(deploy_venv.no_opencv)
    assert "cv2" in line and "edgeyolo[opencv]" in line and "--system-site-packages" in line


def test_torch_is_absent_and_edgeyolo_imports(deploy_venv: DeployVenv) -> None:
    py = str(deploy_venv.bin / "python")
    no_torch = _run([py, "-c", "import torch"])
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    got = _run(
        [py, "-c", "import edgeyolo, sys; print(edgeyolo.__version__, 'torch' in sys.modules)"]
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.split()[1] == "False"


def test_detect_runs_an_exported_graph(
    deploy_venv: DeployVenv, deploy_export: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    got = _run([str(deploy_venv.bin / "edgeyolo"), "detect", str(_frame(tmp_path)), "--model",
                str(deploy_export / "model_fp32.onnx"), "--out", str(out), "--json"])  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    dets = json.loads((out / "detections.json").read_text())
    assert len(dets) == 1 and dets[0]["detections"] and (out / "frame.jpg").is_file()


def _clip(path: Path, frames: int = 5) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    rng = np.random.default_rng(1)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    writer.release()
    return path


def test_detect_reads_a_video_through_this_opencv(
    deploy_venv: DeployVenv, deploy_export: Path, tmp_path: Path
) -> None:
    """Video goes through the capture thread and its quiet OpenCV log (which crashed on
    Debian's OpenCV 4.6, which has no ``cv2.utils.logging``); ``--jsonl -`` makes stdout JSON
    Lines only, one per frame, the rest going to stderr."""
    out = tmp_path / "out"
    got = _run([str(deploy_venv.bin / "edgeyolo"), "detect", str(_clip(tmp_path / "c.mp4")),
                "--model", str(deploy_export / "model_fp32.onnx"), "--out", str(out),
                "--json", "--jsonl", "-"])  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    records = json.loads((out / "detections.json").read_text())
    lines = [json.loads(line) for line in got.stdout.splitlines()]
    assert len(records) == len(lines) == 5 and [r["frame"] for r in lines] == list(range(5))
    assert [len(r["detections"]) for r in lines] == [len(r["detections"]) for r in records]
    assert "5 frame(s)" in got.stderr and "timing:" in got.stderr


def test_bench_without_checkpoint_reports_parity_from_stored_references(
    deploy_venv: DeployVenv, deploy_export: Path, tmp_path: Path
) -> None:
    """Every graph of the export, int8 included, keeps its parity floor on this onnxruntime."""
    out = tmp_path / "bench"
    got = _run([str(deploy_venv.bin / "edgeyolo"), "bench", "--models", str(deploy_export),
                "--runs", "3", "--warmup", "1", "--no-isolate", "--out", str(out),
                "--no-progress"])  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    result = json.loads((out / "bench.json").read_text())
    arts = result["artifacts"]
    assert set(arts) == {"model_fp32.onnx", "model_fp16.onnx", "model_int8.onnx"}
    for key, a in arts.items():
        p = a["parity"]
        assert p["against"].startswith("the ") and p["passed"] is True, (key, p)
        assert p["images"] > 0 and a["map50"] is None
    fp32 = arts["model_fp32.onnx"]["parity"]
    assert fp32["matched_fraction"] == 1.0 and fp32["min_iou"] > 0.999  # ORT fp32 reproduces
    assert any("mAP: no --data" in n for n in result["not_available"])


@pytest.mark.parametrize("command", ["bench", "detect"])
def test_a_graph_its_manifest_does_not_describe_is_refused(
    deploy_venv: DeployVenv, deploy_export: Path, tmp_path: Path, command: str
) -> None:
    folder = Path(shutil.copytree(deploy_export, tmp_path / "export"))
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["file"] == "model_fp32.onnx")
    entry["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    exe = str(deploy_venv.bin / "edgeyolo")
    if command == "bench":
        args = [exe, "bench", "--models", str(folder), "--runs", "1", "--warmup", "0",
                "--no-isolate", "--out", str(tmp_path / "b"), "--no-progress"]  # fmt: skip
    else:
        args = [exe, "detect", str(_frame(tmp_path)), "--model", str(folder / "model_fp32.onnx"),
                "--out", str(tmp_path / "d")]  # fmt: skip
    got = _run(args)
    combined = got.stdout + got.stderr
    assert got.returncode != 0 and "model_fp32.onnx is not the file its manifest" in combined
    assert "sha256 differs" in combined and "Traceback" not in combined


def test_build_without_tensorrt_stops_in_one_line(
    deploy_venv: DeployVenv, deploy_export: Path
) -> None:
    exe = str(deploy_venv.bin / "edgeyolo")
    got = _run([exe, "build", str(deploy_export / "model_fp32.onnx")])
    assert "TensorRT" in _one_error_line(got)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--data", "data.yaml"],
        ["export", "--weights", "best.pt"],
        ["data", "mnist", "data/mnist"],
    ],
)
def test_training_commands_name_the_extra(
    deploy_venv: DeployVenv, args: list[str], tmp_path: Path
) -> None:
    got = _run([str(deploy_venv.bin / "edgeyolo"), *args], cwd=tmp_path)
    assert got.returncode == 1
    lines = [ln for ln in got.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "edgeyolo[train]" in lines[0], got.stderr


def test_camera_example_runs_headless_on_a_video(
    deploy_venv: DeployVenv, deploy_export: Path, tmp_path: Path
) -> None:
    clip = _clip(tmp_path / "clip.mp4")
    out = tmp_path / "annotated.mp4"
    env_no_display = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    got = subprocess.run(
        [str(deploy_venv.bin / "python"), str(ROOT / "examples" / "camera.py"),
         str(deploy_export / "model_fp32.onnx"), str(clip), "--out", str(out)],
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
