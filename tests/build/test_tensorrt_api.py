"""Our TensorRT code checked against the real compiled bindings of TensorRT 10.3 and 11.4, on CPU,
and against TensorRT 8.6's binding sources.

The ``tensorrt-cu12-bindings==10.3.0`` and ``tensorrt-cu13-bindings==11.4.0.106`` wheels
(``scripts/fetch_trt_wheels.sh``) hold ``tensorrt_bindings/tensorrt.so``, which cannot be imported
without libnvinfer, but every class, method, property and enum member pybind11 registers is a C
string in it. Each .so is read from its own wheel with zipfile (both install to one folder).

The linker tail-merges strings (``"Logger"`` is stored as the end of ``"ILogger"``), so a name
counts as present when some C string ends with it. Docstrings do not leak names: ``"FP16"`` is
absent from 11.4 although its docstrings mention FP16.

Every attribute used in the checked files counts as TensorRT's unless :class:`Scan` proves the
object it is read from is plain Python, or the name is in :data:`NOT_TENSORRT`. Names read with
``getattr``/``hasattr`` on such objects are version-gated: they need one version, others need both.

TensorRT 8.6 (the oldest version supported) has no bindings wheel on PyPI:
``tensorrt_8.6_names.txt`` beside this file lists the names its binding sources register (its
header says how it was made), and every un-gated name must be there too.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The checked files, each with names its scan must find (so a broken scan cannot pass quietly).
CHECKED = {
    "edgeyolo/build/tensorrt.py": {
        *("Builder", "Logger", "OnnxParser", "WARNING", "__version__", "add_optimization_profile"),
        *("build_serialized_network", "create_builder_config", "create_network", "serialize"),
        *("create_optimization_profile", "create_timing_cache", "get_error", "get_timing_cache"),
        *("parse_from_file", "set_memory_pool_limit", "set_shape", "set_timing_cache"),
        *("TF32", "clear_flag", "ILogger", "VERBOSE", "INFO", "ProfilingVerbosity", "DETAILED"),
        *("profiling_verbosity", "get_output", "num_outputs"),
        # DLA (--dla-core, --gpu-fallback)
        *("num_DLA_cores", "default_device_type", "DeviceType", "DLA", "DLA_core"),
        *("GPU_FALLBACK", "can_run_on_DLA", "get_layer", "num_layers", "name"),
    },
    "edgeyolo/runtime/tensorrt.py": {"deserialize_cuda_engine"},
}
# Attribute names read from objects the scan cannot prove plain, yet not TensorRT's. Empty now;
# rather than add one, annotate the variable (`host: np.ndarray`), which the scan reads. A name
# added here needs a comment saying where it comes from; version-specific names are refused.
NOT_TENSORRT: frozenset[str] = frozenset()
# Annotations imported from here (``trt: TensorRT``, scripts/typecheck_trt.sh) are TensorRT's.
TRT_TYPES = "edgeyolo.runtime.trt_types"
PLAIN_CALLS = {"str", "bytes", "int", "float", "bool", "len", "repr", "open", "type", "abs", "min"}
PLAIN_CALLS |= {"max", "sum", "round", "print", "memoryview", "bytearray", "isinstance", "Path"}
PLAIN_CALLS |= {"None", "Callable"}  # as annotations
CONTAINERS = {"list", "tuple", "set", "frozenset", "dict", "sorted", "zip", "enumerate", "range"}
CONTAINERS |= {"reversed", "Sequence", "Mapping", "Iterable", "Iterator", "MutableMapping"}
LITERAL_CONTAINERS = (ast.List, ast.Tuple, ast.Set, ast.Dict, ast.ListComp, ast.SetComp)
LITERAL_CONTAINERS += (ast.DictComp, ast.GeneratorExp)
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
PLAIN, CONTAINER = "plain", "container"


class Scan(ast.NodeVisitor):
    """Attributes read from possibly-TensorRT objects: ``used``/``gated``: name -> ["file:line"].

    Plain (not TensorRT) are: literals, plain builtins' results, anything reached from a
    non-TensorRT import, module classes and functions with plain return annotations, parameters
    with plain annotations, names (and ``self.x``) assigned only from plain values. A container's
    own methods are plain, its items are not. ``dynamic`` lists getattr/hasattr with computed names.
    """

    def __init__(self, source: str, label: str) -> None:
        self.label, tree = label, ast.parse(source)
        self.used: dict[str, list[str]] = {}
        self.gated: dict[str, list[str]] = {}
        self.dynamic: list[str] = []
        self.reads: list[tuple[str, str, str]] = []  # (attribute, "file:line", function)
        self.gates: set[tuple[str, str]] = set()  # (function, name) probed with hasattr/getattr
        self.func = ""
        self.classes: list[dict[str, str | None]] = []  # self.<attr> -> kind, per class
        self.selves: dict[str, dict[str, str | None]] = {}
        self.scopes: list[dict[str, str]] = []
        self.scopes = [self._scope(tree, [])]
        for self.recording in (False, True):  # pass 1 learns self.<attr> kinds
            self.gated, self.dynamic, self.reads = {}, [], []
            self.visit(tree)
        for name, at, func in self.reads:  # a read in a function that probed it is gated
            bucket = self.gated if (func, name) in self.gates else self.used
            bucket.setdefault(name, []).append(at)

    def _at(self, node: ast.AST) -> str:
        return f"{self.label}:{node.lineno}"

    def _lookup(self, name: str) -> str | None:
        return next((s[name] for s in reversed(self.scopes) if name in s), None)

    def _kind(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant | ast.JoinedStr):
            return PLAIN
        if isinstance(node, LITERAL_CONTAINERS):
            return CONTAINER
        if isinstance(node, ast.Name):
            return self._lookup(node.id)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in CONTAINERS:
                return CONTAINER
            return PLAIN if node.func.id in PLAIN_CALLS else self._lookup(node.func.id)
        if self.classes and _is_self(node):
            return self.classes[-1].get(node.attr)
        if isinstance(node, ast.Attribute | ast.Subscript | ast.Call):
            inner = node.func if isinstance(node, ast.Call) else node.value
            return PLAIN if self._kind(inner) == PLAIN else None
        return None

    def _annotation_kind(self, ann: ast.AST | None) -> str | None:
        if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
            ann = ast.parse(ann.value, mode="eval").body
        if isinstance(ann, ast.BinOp):  # X | None
            kinds = {self._annotation_kind(ann.left), self._annotation_kind(ann.right)}
            return None if None in kinds else CONTAINER if CONTAINER in kinds else PLAIN
        if isinstance(ann, ast.Constant) and ann.value is None:
            return PLAIN
        outer = ann.value if isinstance(ann, ast.Subscript) else ann
        while isinstance(outer, ast.Attribute):
            outer = outer.value
        if not isinstance(outer, ast.Name) or outer.id in ("Any", "object"):
            return None
        if outer.id in CONTAINERS:
            return CONTAINER
        return PLAIN if outer.id in PLAIN_CALLS or self._lookup(outer.id) == PLAIN else None

    def _scope(self, node: ast.AST, params: list[ast.arg]) -> dict[str, str]:
        """Plain names bound in one function (or the module), not entering nested definitions."""
        scope: dict[str, str] = {}
        self.scopes.append(scope)
        body = list(_walk_scope(node))
        for n in body:
            for alias in n.names if isinstance(n, ast.Import | ast.ImportFrom) else []:
                module = (n.module or "") if isinstance(n, ast.ImportFrom) else alias.name
                # `import tensorrt`, `import_tensorrt` and the TensorRT Protocol (for mypy) give
                # TensorRT objects; nothing else does
                trt = module.split(".")[0] in ("tensorrt", "tensorrt_bindings")
                trt |= module == TRT_TYPES
                if not trt and "tensorrt" not in alias.name:
                    scope[(alias.asname or alias.name).split(".")[0]] = PLAIN
        for _ in range(4):  # assignments may depend on each other: iterate to a fixpoint
            for arg in params:
                if (kind := self._annotation_kind(arg.annotation)) is not None:
                    scope[arg.arg] = kind
            for n in body:
                for name, value in _bindings(n):
                    if isinstance(name, str) and (kind := self._kind(value)) is not None:
                        scope[name] = kind
                declared = isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
                if declared and (kind := self._annotation_kind(n.annotation)) is not None:
                    scope[n.target.id] = kind  # `host: np.ndarray` declares a plain name
                if isinstance(n, ast.ClassDef) and all(self._kind(b) for b in n.bases):
                    scope[n.name] = PLAIN
                if isinstance(n, ast.FunctionDef) and self._annotation_kind(n.returns) == PLAIN:
                    scope[n.name] = PLAIN
        self.scopes.pop()
        return scope

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        a = node.args
        params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, [a.vararg, a.kwarg])]
        self.scopes.append(self._scope(node, params))
        outer, self.func = self.func, f"{self.func}.{node.name}"
        if self.classes and not self.recording:  # learn what this method assigns to self.<attr>
            for n in _walk_scope(node):
                for target, value in _bindings(n):
                    if isinstance(target, ast.Attribute) and _is_self(target):
                        known = self.classes[-1].get(target.attr, self._kind(value))
                        self.classes[-1][target.attr] = (
                            known if known == self._kind(value) else None
                        )
        self.generic_visit(node)
        self.scopes.pop()
        self.func = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        own = self.selves.setdefault(node.name, {})
        for n in node.body:  # fields: kind of their annotation or value; methods: of their result
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                own.setdefault(n.name, self._annotation_kind(n.returns))
            elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
                own.setdefault(n.target.id, self._annotation_kind(n.annotation))
            for name, value in _bindings(n) if isinstance(n, ast.Assign) else []:
                own.setdefault(str(name), self._kind(value))
        self.classes.append(own)
        self.generic_visit(node)
        self.classes.pop()

    def visit_Call(self, node: ast.Call) -> None:
        func, args = node.func, node.args
        probe = isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and args[1:]
        if probe and self._kind(args[0]) is None:
            if isinstance(args[1], ast.Constant):
                self.gates.add((self.func, str(args[1].value)))
                self.gated.setdefault(str(args[1].value), []).append(self._at(node))
            else:
                self.dynamic.append(self._at(node))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        own = self.classes and _is_self(node) and node.attr in self.classes[-1]
        if not own and self._kind(node.value) is None and node.attr not in NOT_TENSORRT:
            self.reads.append((node.attr, self._at(node), self.func))
        self.generic_visit(node)


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and getattr(node.value, "id", "") in ("self", "cls")


def _walk_scope(node: ast.AST) -> Iterator[ast.AST]:
    """ast.walk without entering nested function or class bodies."""
    for child in ast.iter_child_nodes(node):
        yield child
        if not isinstance(child, DEFS):
            yield from _walk_scope(child)


def _targets(node: ast.AST) -> list[ast.expr]:
    if isinstance(node, ast.Assign):
        return node.targets
    return [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else []


def _bindings(node: ast.AST) -> list[tuple[str | ast.Attribute, ast.AST]]:
    """(name or self-attribute, value) pairs a statement binds: assignment, with-as, except-as."""
    pairs: list[tuple[str | ast.Attribute, ast.AST]] = []
    value = getattr(node, "value", None)
    for target in _targets(node) if value is not None else []:
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
            pairs += [
                (getattr(t, "id", t), v) for t, v in zip(target.elts, value.elts, strict=False)
            ]
        elif isinstance(target, ast.Name | ast.Attribute):
            pairs.append((getattr(target, "id", target), value))
    if isinstance(node, ast.withitem) and isinstance(node.optional_vars, ast.Name):
        pairs.append((node.optional_vars.id, node.context_expr))
    if isinstance(node, ast.ExceptHandler) and node.name and node.type is not None:
        pairs.append((node.name, node.type))
    return pairs


def _binary_names(blob: bytes) -> set[str]:
    """Every identifier a C string of the module ends with (strings may be tail-merged)."""
    names: set[str] = set()
    for text in blob.split(b"\0"):
        match = re.search(rb"[A-Za-z_][A-Za-z0-9_]*\Z", text)
        if match is None or text.startswith(b"_Z"):  # _Z: mangled C++ symbols, not the API
            continue
        run = match.group().decode()
        names.update(run[i:] for i in range(len(run)) if not run[i].isdigit())
    return names


def _python_names(source: bytes) -> set[str]:
    """Names the wheel's ``__init__.py`` adds: top-level assignments, defs, attribute stores."""
    tree = ast.parse(source)
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    for node in _walk_scope(tree):
        names |= {getattr(t, "id", None) or getattr(t, "attr", "") for t in _targets(node)}
    return names


def wheel_dir() -> Path:
    return Path(os.environ.get("EDGEYOLO_TRT_WHEELS") or REPO / ".ci" / "wheels")


@functools.cache
def api_names(wheel: Path) -> frozenset[str]:
    """The TensorRT Python API names in one bindings wheel, read without installing it."""
    with zipfile.ZipFile(wheel) as zf:
        (so,) = [
            m for m in zf.namelist() if re.fullmatch(r"tensorrt_bindings/tensorrt[^/]*\.so", m)
        ]
        names = _binary_names(zf.read(so)) | _python_names(zf.read("tensorrt_bindings/__init__.py"))
    return frozenset(names)


@pytest.fixture(scope="module")
def apis() -> dict[str, frozenset[str]]:
    """{"10.3.0": names, "11.4.0.106": names}; skips with the reason when a wheel is missing."""
    found: dict[str, Path] = {}
    for wheel in sorted(wheel_dir().glob("tensorrt_cu*_bindings-*.whl")):
        found.setdefault(wheel.name.split("-")[1].split(".")[0], wheel)
    if not {"10", "11"} <= found.keys():
        pytest.skip(
            f"TensorRT 10.x and 11.x bindings wheels are not in {wheel_dir()} (majors found: "
            f"{sorted(found)}); run scripts/fetch_trt_wheels.sh or set EDGEYOLO_TRT_WHEELS"
        )
    return {w.name.split("-")[1]: api_names(w) for w in (found["10"], found["11"])}


@pytest.fixture(scope="module")
def scans() -> list[Scan]:
    return [Scan((REPO / f).read_text(), f) for f in CHECKED if (REPO / f).is_file()]


def test_extractor_discriminates_between_versions(apis: dict[str, frozenset[str]]) -> None:
    v10, v11 = apis.values()
    for gone_in_11 in ("EXPLICIT_BATCH", "FP16", "platform_has_fast_fp16", "IInt8Calibrator"):
        assert gone_in_11 in v10 and gone_in_11 not in v11, gone_in_11
    assert "build_engine_with_config" in v11 and "build_engine_with_config" not in v10
    for never in ("build_engine", "execute_async_v2", "build_engine_v99"):
        assert never not in v10 and never not in v11, never  # build_engine went in 10.0
    for both in ("build_serialized_network", "STRONGLY_TYPED", "__version__", "Logger", "desc"):
        assert both in v10 and both in v11, both


SNIPPET = """
import torch
from pathlib import Path
from edgeyolo.runtime.gpu import import_tensorrt
def f(p: Path, d: dict, x):
    trt = import_tensorrt()
    torch.cuda.is_available(); p.parent.mkdir(); ", ".join(d); getattr(p, "stem")
    flag = getattr(trt.BuilderFlag, "FP16", None); getattr(trt, x)
    items = [trt.Builder(x)]; items.append(1); items[0].build_engine_v99(); d["k"].shape
    return x.name
class Runner:
    def __init__(self, blob):
        self.stream = torch.cuda.Stream(); self.engine = import_tensorrt().Runtime(blob)
    def run(self):
        self.stream.synchronize(); return self.engine.num_io_tensors, self.run
    def out(self, pairs: dict):
        host: bytes
        host, dev = pairs["x"]; return host.hex(), dev.device_ptr
"""


def test_scan_sorts_attributes() -> None:
    scan = Scan(SNIPPET, "snippet")
    expected = {"BuilderFlag", "Builder", "build_engine_v99", "shape", "name", "Runtime"}
    assert set(scan.used) == expected | {"num_io_tensors", "device_ptr"}
    assert set(scan.gated) == {"FP16"} and scan.dynamic == ["snippet:8"]


@pytest.mark.parametrize("path", sorted(CHECKED))
def test_scan_finds_the_tensorrt_calls(path: str) -> None:
    if not (REPO / path).is_file():
        pytest.skip(f"{path} is not written yet")
    scan = Scan((REPO / path).read_text(), path)
    assert CHECKED[path] <= scan.used.keys(), CHECKED[path] - scan.used.keys()
    assert not scan.dynamic, (
        f"getattr/hasattr with computed names cannot be checked: {scan.dynamic}"
    )


def _check(scans: list[Scan], apis: dict[str, frozenset[str]]) -> tuple[set[str], set[str]]:
    """Un-gated names missing from some version, and gated names found in none."""

    def lacking(name: str) -> list[str]:
        return [version for version, names in apis.items() if name not in names]

    missing = {f"{n} (not in {lacking(n)}) at {at}" for s in scans for n, at in s.used.items()}
    unknown = {f"{n} at {at}" for s in scans for n, at in s.gated.items()}
    return (
        {m for m in missing if lacking(m.split()[0])},
        {u for u in unknown if len(lacking(u.split()[0])) == len(apis)},
    )


def test_names_exist_in_the_real_bindings(
    apis: dict[str, frozenset[str]], scans: list[Scan]
) -> None:
    missing, unknown = _check(scans, apis)
    assert not missing, f"not in every TensorRT version; gate with hasattr/getattr: {missing}"
    assert not unknown, f"in no TensorRT version (a typo?): {unknown}"


def test_check_catches_a_removed_api(apis: dict[str, frozenset[str]]) -> None:
    source = (REPO / "edgeyolo/build/tensorrt.py").read_text()
    broken = source.replace(".build_serialized_network(", ".build_engine(")
    broken = broken.replace('getattr(trt.BuilderFlag, "FP16", None)', "trt.BuilderFlag.FP16")
    broken = broken.replace('"STRONGLY_TYPED"', '"STRONGLY_TYPD"')
    assert broken.count("build_engine(") and broken.count(".FP16") and broken.count("TYPD")
    missing, unknown = _check([Scan(broken, "broken")], apis)
    assert {m.split()[0] for m in missing} == {"build_engine", "FP16"}
    assert {u.split()[0] for u in unknown} == {"STRONGLY_TYPD"}


@functools.cache
def trt86_names() -> frozenset[str]:
    """TensorRT 8.6's API names (``tensorrt_8.6_names.txt``: one a line, ``#`` comments)."""
    text = (Path(__file__).parent / "tensorrt_8.6_names.txt").read_text()
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


def test_trt86_names_tell_86_from_10() -> None:
    """The list holds 8.6's API, not a later one: what the version branches rely on."""
    v86 = trt86_names()
    for in_86 in ("EXPLICIT_BATCH", "FP16", "INT8", "TF32", "ILogger", "execute_async_v3"):
        assert in_86 in v86, in_86
    for later in ("STRONGLY_TYPED", "node_name", "node_operator", "build_engine_with_config"):
        assert later not in v86, later  # strong typing and ParserError's names came in 10.x
    assert "build_engine" in v86  # removed in 10.0


def _missing_in_86(scans: list[Scan]) -> set[str]:
    """Un-gated names absent from 8.6 (dunders such as ``__init__`` are pybind11's own for every
    class and are not in the sources' strings)."""
    v86 = trt86_names()
    return {
        f"{n} at {at}"
        for s in scans
        for n, at in s.used.items()
        if n not in v86 and not (n.startswith("__") and n != "__version__")
    }


def test_names_exist_in_tensorrt_86(scans: list[Scan]) -> None:
    missing = _missing_in_86(scans)
    assert not missing, f"not in TensorRT 8.6; gate with hasattr/getattr: {missing}"


def test_86_check_catches_an_ungated_10x_name() -> None:
    source = (REPO / "edgeyolo/build/tensorrt.py").read_text()
    broken = source.replace('getattr(kinds, "STRONGLY_TYPED", None)', "kinds.STRONGLY_TYPED")
    assert broken != source
    assert {m.split()[0] for m in _missing_in_86([Scan(broken, "broken")])} == {"STRONGLY_TYPED"}


def test_allowlist_hides_no_version_difference(apis: dict[str, frozenset[str]]) -> None:
    v10, v11 = apis.values()
    assert not NOT_TENSORRT & (v10 ^ v11), "NOT_TENSORRT must not hide a version-specific name"
