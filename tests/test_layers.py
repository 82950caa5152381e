"""The package's floors: every import between parts runs downward, function-local ones counted.

The table is the one in the README's "What is where". A part is a subpackage or a top-level
module; an import is any ``import``/``from ... import`` anywhere in a file (module level or inside
a function) and any ``lazy_import("edgeyolo....")``. Two parts on one floor may not import each
other; a part may use its own modules freely.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "edgeyolo"

#: floor of each part: lower floors never import higher ones. The base (floor 1) has an order of
#: its own: errors first, then what uses only errors, then decode + NMS over the box ops.
FLOORS: dict[str, float] = {
    # 1 base: errors, settings, box math, decode + NMS, devices, console, files, optional imports
    "_version": 1.0,
    "errors": 1.0,
    "lazy": 1.05,  # optional imports: uses errors only; the rest of the base may use it
    **dict.fromkeys(("config", "ops", "device", "console", "cpuinfo", "fileio"), 1.1),
    "visualize": 1.1,
    "detections": 1.1,
    "postprocess": 1.2,
    # 2 data and model artifacts (checkpoints, darknet weights)
    "data": 2,
    "models": 2,
    # 3 the loss; metrics as pure functions over predictions and ground truth
    "loss": 3,
    "metrics": 3,
    # 4 inference: PyTorch, ONNX Runtime, TensorRT behind one Backend; Detector; manifest; checks
    "runtime": 4,
    # 5 evaluation of a model or artifact over a data split; building an engine on the device
    "evaluate": 5,
    "build": 5,
    # 6 the stages that use evaluation: training and export
    "train": 6,
    "export": 6,
    # 7 applications over inference: the bench runner, detect over files and cameras
    "bench": 7,
    "detect_live": 7,  # videos and live sources; its helpers serve detect too
    "detect": 7.1,
    # 8 the command line and the package's lazy front door
    "cli": 8,
    "__init__": 8,
    "__main__": 8.1,
}


def part_of(module: str) -> str | None:
    """``edgeyolo.runtime.backends`` → ``runtime``; ``edgeyolo.cli`` → ``cli``; else None."""
    bits = module.split(".")
    if bits[0] != "edgeyolo":
        return None
    return "__init__" if len(bits) == 1 else bits[1]


def imports_of(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every edgeyolo import in ``path``, function-local ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "edgeyolo":  # from edgeyolo import x: x is a part
                out += [(node.lineno, f"edgeyolo.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; write it absolute")
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "lazy_import"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            out.append((node.lineno, str(node.args[0].value)))
    return [(line, m) for line, m in out if m.split(".")[0] == "edgeyolo"]


def upward_imports(pkg: Path, floors: dict[str, float]) -> list[str]:
    """Every import in ``pkg`` from a part to a part on the same or a higher floor."""
    bad = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg.parent)
        me = part_of(".".join(rel.with_suffix("").parts))
        assert me in floors, f"{rel}: part {me!r} has no floor; add it to FLOORS and the README"
        for line, module in imports_of(path):
            other = part_of(module)
            assert other in floors, f"{rel}:{line}: {module} is in no floor"
            if other != me and floors[other] >= floors[me]:
                bad.append(f"{rel}:{line}: {me} (floor {floors[me]}) imports {module} "
                           f"(floor {floors[other]})")  # fmt: skip
    return bad


def test_every_import_runs_downward() -> None:
    assert upward_imports(PKG, FLOORS) == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    pkg = tmp_path / "edgeyolo"
    (pkg / "runtime").mkdir(parents=True)
    (pkg / "config.py").write_text("X = 1\n")
    (pkg / "runtime" / "backends.py").write_text(
        "from edgeyolo.config import X\n\ndef f():\n    from edgeyolo.export import pipeline\n"
    )
    (pkg / "runtime" / "lazy_user.py").write_text(
        "from edgeyolo.lazy import lazy_import\nT = lazy_import('edgeyolo.train.trainer')\n"
    )
    found = upward_imports(pkg, FLOORS)
    assert len(found) == 2, found
    assert "runtime (floor 4) imports edgeyolo.export (floor 6)" in found[0]
    assert "lazy_user.py:2" in found[1] and "edgeyolo.train.trainer" in found[1]


def test_floors_table_is_in_the_readme() -> None:
    readme = (PKG.parent / "README.md").read_text()
    for part in FLOORS:
        if part.startswith("_"):
            continue
        name = f"`{part}/`" if (PKG / part).is_dir() else f"`{part}.py`"
        assert name in readme or f"{part}.py" in readme, f"{part} is missing from the README"


#: Function-local imports are for optional heavy packages only, each through ``lazy_import`` at
#: module level; the CLI's command modules are lazy too, so no function imports anything.
def test_no_function_local_imports() -> None:
    found = []
    for path in sorted(PKG.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found += [
                    f"{path.relative_to(PKG.parent)}:{n.lineno} in {fn.name}"
                    for n in ast.walk(fn)
                    if isinstance(n, (ast.Import, ast.ImportFrom))
                ]
    assert found == [], "use edgeyolo.lazy.lazy_import at module level instead:\n" + "\n".join(
        found
    )


@pytest.mark.parametrize("limit", [80])
def test_functions_fit_on_a_screen(limit: int) -> None:
    long = []
    for path in sorted(PKG.rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = fn.end_lineno - fn.body[0].lineno + 1
                if body > limit:
                    long.append(f"{path.relative_to(PKG.parent)}:{fn.lineno} {fn.name} ({body})")
    assert long == []
