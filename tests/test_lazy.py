"""Optional imports: nothing is imported before use, and a missing or old package is named."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from edgeyolo.errors import MissingDependencyError, TensorRTNotAvailableError
from edgeyolo.lazy import lazy_import, version_tuple


def test_version_tuple_reads_release_parts() -> None:
    assert version_tuple("10.3.0.26") == (10, 3, 0, 26)
    assert version_tuple("2.14.1+cu130") == (2, 14, 1)
    assert version_tuple("3.10rc1") == (3, 10)
    assert version_tuple("8.6") < version_tuple("8.6.1") < version_tuple("10.0")


def test_nothing_is_imported_until_an_attribute_is_read() -> None:
    code = (
        "import sys\n"
        "from edgeyolo.lazy import lazy_import\n"
        "m = lazy_import('json.tool')\n"
        "assert 'json.tool' not in sys.modules\n"
        "assert callable(m.main) and 'json.tool' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "somepkg", None)  # `import somepkg` raises ImportError
    mod = lazy_import("somepkg", min_version="2.0", install="pip install somepkg", needed_for="X")
    assert not mod.available()
    with pytest.raises(MissingDependencyError) as info:
        mod.thing  # noqa: B018
    msg = str(info.value)
    assert "somepkg >= 2.0 (needed for X) cannot be imported" in msg
    assert msg.endswith("install it: pip install somepkg") and "\n" not in msg


def test_too_old_package_is_refused_with_both_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    old = types.ModuleType("oldpkg")
    old.__version__ = "1.9.3"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "oldpkg", old)
    with pytest.raises(
        TensorRTNotAvailableError, match=r"oldpkg >= 2\.0 is needed, .* has 1\.9\.3"
    ):
        lazy_import("oldpkg", min_version="2.0", error=TensorRTNotAvailableError).load()
    old.__version__ = "2.0.1"  # type: ignore[attr-defined]
    assert lazy_import("oldpkg", min_version="2.0").load() is old


def test_dunder_probes_do_not_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "absentpkg", None)
    mod = lazy_import("absentpkg")
    assert not hasattr(mod, "__wrapped__")  # inspect/copy probes: AttributeError, no import
    assert "absentpkg" in repr(mod)


def test_a_broken_import_in_our_own_code_is_not_called_a_missing_package(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "brokenmod.py").write_text("from edgeyolo.errors import NoSuchName\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="cannot import name 'NoSuchName'") as info:
        lazy_import("brokenmod").load()
    assert not isinstance(info.value, MissingDependencyError)
