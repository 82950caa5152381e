"""A failed `edgeyolo export` leaves --out exactly as it was; checks come before long steps."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edgeyolo.export.int8_gate as int8_gate
import edgeyolo.export.quantize as quantize
from edgeyolo.cli import app
from edgeyolo.config import ExportConfig
from edgeyolo.errors import AccuracyBudgetError
from edgeyolo.export import pipeline
from edgeyolo.export.pipeline import STAGING_MARK, export_model
from edgeyolo.runtime.manifest import read_manifest, sha256_file

runner = CliRunner()


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too), by relative path, with its bytes."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.fixture(scope="session")
def fp16_export(
    tmp_path_factory: pytest.TempPathFactory, busy_checkpoint: Path, calib_folder: Path
) -> Path:
    """A finished fp32 + fp16 export (copied by the tests that write over it); its conf 0.3 is
    baked into the graphs, so a later export at the default conf has other bytes."""
    out = tmp_path_factory.mktemp("prev") / "exp"
    export_model(
        ExportConfig(
            weights=str(busy_checkpoint),
            out=str(out),
            fp16=True,
            calib=str(calib_folder),
            conf_thres=0.3,
        ),
        progress=False,
        log=lambda _s: None,
    )
    return out


@pytest.fixture
def previous(tmp_path: Path, fp16_export: Path) -> Path:
    """A copy of :func:`fp16_export` in ``tmp_path/exp`` with a user's own file beside it."""
    out = tmp_path / "exp"
    shutil.copytree(fp16_export, out)
    (out / "my_notes.txt").write_text("not edgeyolo's")
    return out


def test_int8_without_calib_folder_names_where_it_looked_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy_checkpoint: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the default --calib calib_data is not here
    out = tmp_path / "new" / "exp"
    before = _tree(tmp_path)
    args = ["export", "--weights", str(busy_checkpoint), "--out", str(out), "--int8"]
    r = runner.invoke(app, [*args, "--no-progress"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    text = " ".join(r.output.split())
    assert str((elsewhere / "calib_data").resolve()) in text  # the absolute path it resolved
    assert f"relative to the current folder {Path.cwd()}" in text
    assert "--calib PATH" in text
    assert "random noise" not in text  # no note that contradicts the error
    assert _tree(tmp_path) == before  # no out folder, no parent made for it, no staging folder


def test_without_int8_missing_calib_is_a_note_naming_the_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy_checkpoint: Path, calib_folder: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    logs: list[str] = []
    export_model(
        ExportConfig(weights=str(busy_checkpoint), out="exp", calib="frames"),
        progress=False,
        log=logs.append,
    )
    notes = [line for line in logs if "random noise" in line]
    assert len(notes) == 1 and str((tmp_path / "frames").resolve()) in notes[0]
    assert read_manifest(tmp_path / "exp")["artifacts"][0]["file"] == "model_fp32.onnx"
    # with real images the note does not appear
    logs.clear()
    export_model(
        ExportConfig(weights=str(busy_checkpoint), out="exp2", calib=str(calib_folder)),
        progress=False,
        log=logs.append,
    )
    assert not any("random noise" in line for line in logs)


def _impossible_gate(real):
    """``int8_with_budget`` with a budget no graph can meet (a real gate failure, one step)."""

    def gate(*args, **kwargs):
        return real(*args, **{**kwargs, "max_drop": -1e9, "max_steps": 0})

    return gate


@pytest.mark.parametrize("has_previous", [True, False], ids=["over-previous", "fresh"])
@pytest.mark.parametrize("failure", ["gate", "manifest"])
def test_failure_after_fp32_was_written_leaves_out_untouched(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    busy_checkpoint: Path,
    calib_folder: Path,
    mnist_small_yaml: Path,
    previous: Path,
    failure: str,
    has_previous: bool,
) -> None:
    out = previous if has_previous else tmp_path / "a" / "b" / "exp"
    if not has_previous:
        shutil.rmtree(previous)
    before_files = _snapshot(out) if has_previous else None
    before_tree = _tree(tmp_path)
    written: list[str] = []
    real_quantize = quantize.quantize_int8

    def spy(fp32_path, *args, **kwargs):  # records that fp32 existed when int8 began
        written.append(Path(fp32_path).name)
        return real_quantize(fp32_path, *args, **kwargs)

    monkeypatch.setattr(quantize, "quantize_int8", spy)
    if failure == "gate":
        monkeypatch.setattr(
            int8_gate, "int8_with_budget", _impossible_gate(int8_gate.int8_with_budget)
        )
        expected: type[BaseException] = AccuracyBudgetError
    else:

        def disk_full(*_a, **_k):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(pipeline, "write_manifest", disk_full)
        expected = OSError
    cfg = ExportConfig(
        weights=str(busy_checkpoint),
        out=str(out),
        fp16=True,
        int8=True,
        calib=str(calib_folder),
        calib_method="minmax",
        data=str(mnist_small_yaml),
        val_split="train",
        int8_max_drop=100.0,
    )
    with pytest.raises(expected):
        export_model(cfg, progress=False, log=lambda _s: None)
    assert written == ["model_fp32.onnx"]  # the failure came after the fp32 graph was built
    assert _tree(tmp_path) == before_tree  # no staging folder, no new parent folders
    if has_previous:
        assert _snapshot(out) == before_files  # byte-identical previous export
    assert not any(STAGING_MARK in p.name for p in tmp_path.rglob("*"))


def test_reexport_replaces_files_and_drops_those_no_longer_listed(
    tmp_path: Path, busy_checkpoint: Path, calib_folder: Path, previous: Path
) -> None:
    assert (previous / "model_fp16.onnx").is_file()
    m = export_model(
        ExportConfig(weights=str(busy_checkpoint), out=str(previous), calib=str(calib_folder)),
        progress=False,
        log=lambda _s: None,
    )
    assert [a["file"] for a in m["artifacts"]] == ["model_fp32.onnx"]
    assert read_manifest(previous)["artifacts"] == m["artifacts"]
    assert sha256_file(previous / "model_fp32.onnx") == m["artifacts"][0]["sha256"]
    assert not (previous / "model_fp16.onnx").exists()  # the old manifest's, not listed any more
    assert (previous / "my_notes.txt").read_text() == "not edgeyolo's"  # not ours: kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_unreadable_data_yaml_fails_before_anything_is_written(
    tmp_path: Path, busy_checkpoint: Path
) -> None:
    out = tmp_path / "exp"
    missing = tmp_path / "no_such" / "data.yaml"
    r = runner.invoke(
        app,
        ["export", "--weights", str(busy_checkpoint), "--out", str(out), "--data", str(missing)],
    )
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert str(missing) in " ".join(r.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_out_that_is_a_file_is_refused_first(tmp_path: Path, busy_checkpoint: Path) -> None:
    out = tmp_path / "exp"
    out.write_text("a file")
    r = runner.invoke(app, ["export", "--weights", str(busy_checkpoint), "--out", str(out)])
    assert r.exit_code == 1 and "is a file" in r.output
    assert out.read_text() == "a file" and sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
