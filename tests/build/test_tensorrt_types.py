"""The TensorRT code type-checked (mypy) against TensorRT's stubs: scripts/typecheck_trt.sh.

Stub sets (scripts/trt_stubs.py): ``10.3`` and ``11.4`` generated from the real bindings wheels,
``10.13`` the published ``tensorrt-stubs``, ``8.6`` the 10.3 set pruned to 8.6's names (no 8.6
bindings exist on PyPI; its signatures are 10.3's). Skipped, with the reason, where mypy or the
stubs cannot be had (no registry, no C compiler, no Python 3.11 for the cp311 wheels).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("EDGEYOLO_TRT_TYPECHECK") or REPO / ".ci" / "wheels" / "typecheck")
LABELS = ("8.6", "10.3", "10.13", "11.4")


@pytest.fixture(scope="module")
def typecheck() -> str:
    """The script's output (it prepares mypy and the stubs, then checks every set)."""
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "typecheck_trt.sh")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "EDGEYOLO_PYTHON": sys.executable},
    )
    out = run.stdout + run.stderr
    if "SKIPPED: could not install mypy" in out:
        pytest.skip(out.strip().splitlines()[-1])
    return out


def _stubs(label: str, out: str) -> Path:
    stubs = WORK / "stubs" / label
    if not stubs.is_dir():
        why = [line for line in out.splitlines() if f"no {label} stubs" in line]
        pytest.skip(f"no TensorRT {label} stubs: {why[0] if why else out[-300:]}")
    return stubs


@pytest.mark.parametrize("label", LABELS)
def test_tensorrt_code_passes_mypy(typecheck: str, label: str) -> None:
    _stubs(label, typecheck)
    section = typecheck.split(f"typecheck_trt: {label}: ", 1)[1].split("typecheck_trt: ", 1)[0]
    assert "Success: no issues found" in section, section


def _mypy(label: str, root: Path, out: str) -> str:
    """mypy (the script's settings) over the TensorRT files of the tree at ``root``."""
    cmd = [str(WORK / "venv" / "bin" / "python"), "-m", "mypy"]
    cmd += ["--config-file", str(REPO / "scripts" / "typecheck_trt.ini")]
    cmd += ["--python-executable", sys.executable, "--cache-dir", str(root / ".mypy_cache")]
    cmd += ["edgeyolo/runtime/trt_types.py", "edgeyolo/build/tensorrt.py"]
    cmd += ["edgeyolo/runtime/tensorrt.py"]
    env = {**os.environ, "MYPYPATH": str(_stubs(label, out))}
    run = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env, timeout=300)
    return run.stdout + run.stderr


# (file, right, wrong, the error mypy must give) -> which stub sets must report it
BREAKS = {
    "wrong argument type": (
        "edgeyolo/runtime/tensorrt.py",
        "context.set_tensor_address(name, int(tensor.device))",
        "context.set_tensor_address(name, str(tensor.device))",
        r'Argument 2 to "set_tensor_address" of "IExecutionContext" has incompatible type "str"',
    ),
    "no such enum member": (
        "edgeyolo/build/tensorrt.py",
        "config.set_flag(trt.BuilderFlag.TF32)",
        "config.set_flag(trt.BuilderFlag.TF33)",
        r'"type\[BuilderFlag\]" has no attribute "TF33"',
    ),
    "no such method": (
        "edgeyolo/build/tensorrt.py",
        "builder.build_serialized_network(network, config)",
        "builder.build_engine(network, config)",
        r'"Builder" has no attribute "build_engine"',
    ),
    "un-gated FP16 (gone in 11)": (
        "edgeyolo/build/tensorrt.py",
        'fp16 = getattr(trt.BuilderFlag, "FP16", None)',
        "fp16 = trt.BuilderFlag.FP16",
        r'"type\[BuilderFlag\]" has no attribute "FP16"',
    ),
    "un-gated STRONGLY_TYPED (new in 10)": (
        "edgeyolo/build/tensorrt.py",
        'strong = getattr(kinds, "STRONGLY_TYPED", None)',
        "strong = kinds.STRONGLY_TYPED",
        r'has no attribute "STRONGLY_TYPED"',
    ),
}
EXPECTED = {  # label -> the breaks it must catch
    "8.6": set(BREAKS) - {"un-gated FP16 (gone in 11)"},
    "10.3": set(BREAKS) - {"un-gated FP16 (gone in 11)", "un-gated STRONGLY_TYPED (new in 10)"},
    "10.13": set(BREAKS) - {"un-gated FP16 (gone in 11)", "un-gated STRONGLY_TYPED (new in 10)"},
    "11.4": set(BREAKS) - {"un-gated STRONGLY_TYPED (new in 10)"},
}


@pytest.mark.parametrize("label", sorted(EXPECTED))
def test_check_catches_wrong_calls(typecheck: str, label: str, tmp_path: Path) -> None:
    """A copy of the package with every break of :data:`BREAKS` at once: each stub set reports
    exactly the ones that are wrong for its version."""
    shutil.copytree(
        REPO / "edgeyolo", tmp_path / "edgeyolo", ignore=shutil.ignore_patterns("*.pyc")
    )
    for path, right, wrong, _ in BREAKS.values():
        source = (tmp_path / path).read_text()
        assert source.count(right) == 1, right
        (tmp_path / path).write_text(source.replace(right, wrong))
    out = _mypy(label, tmp_path, typecheck)
    caught = {name for name, (*_, error) in BREAKS.items() if re.search(error, out)}
    assert caught == EXPECTED[label], out
    assert len(re.findall(r": error:", out)) == len(EXPECTED[label]), out


def test_repair_makes_stubgen_output_valid() -> None:
    spec = importlib.util.spec_from_file_location("trt_stubs", REPO / "scripts" / "trt_stubs.py")
    assert spec is not None and spec.loader is not None
    trt_stubs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trt_stubs)
    raw = (
        "from __future__ import annotations\nclass Dims:\n    pass\nclass X:\n"
        "    def f(self, in: list[int], shift: int = None, axis: int) -> bool:\n"
        "    def g(self, min: Dims, opt: Dims = ...) -> Dims:\n"
        "bool: DataType\n"
    )
    fixed = trt_stubs.repair(raw)
    assert "def f(self, in_: list[int], shift: int = None, axis: int = ...) -> builtins.bool:" in (
        fixed
    )
    assert "min: Dims | _typing.Sequence[int], opt: Dims | _typing.Sequence[int] = ..." in fixed
    assert ") -> Dims:" in fixed and "\nbool: DataType" in fixed
    assert "def __iter__(self) -> _typing.Iterator[int]: ..." in fixed
