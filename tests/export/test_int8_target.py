"""`--int8-cpu-target any|vnni`: one rule for the weight range, recorded in the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeyolo import cpuinfo
from edgeyolo.cli import app
from edgeyolo.config import ExportConfig
from edgeyolo.errors import ConfigError
from edgeyolo.export.pipeline import export_model
from edgeyolo.export.quantize import resolve_reduce_range
from tests.export.test_quantize import _conv_weight_codes

runner = CliRunner()


@pytest.mark.parametrize(
    ("placement", "target", "reduce_range", "message"),
    [
        ("tensorrt", "vnni", None, "--int8-cpu-target vnni is for --int8-placement onnxruntime"),
        ("onnxruntime", "any", False, "--no-int8-reduce-range contradicts --int8-cpu-target any"),
        ("onnxruntime", "vnni", True, "--int8-reduce-range contradicts --int8-cpu-target vnni"),
        ("tensorrt", "any", True, "--int8-reduce-range contradicts --int8-placement tensorrt"),
        ("onnxruntime", "avx2", None, "unknown --int8-cpu-target 'avx2'"),
    ],
)
def test_contradictory_settings_are_refused(
    placement: str, target: str, reduce_range: bool | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        ExportConfig(
            int8=True,
            int8_placement=placement,
            int8_cpu_target=target,
            int8_reduce_range=reduce_range,
        )


@pytest.mark.parametrize(
    ("placement", "target", "seven_bit", "recorded"),
    [
        ("onnxruntime", "any", True, "any"),
        ("onnxruntime", "vnni", False, "vnni"),
        ("tensorrt", "any", False, "gpu"),
    ],
)
def test_the_target_decides_the_weight_range(
    placement: str, target: str, seven_bit: bool, recorded: str
) -> None:
    cfg = ExportConfig(int8=True, int8_placement=placement, int8_cpu_target=target)
    assert cfg.int8_target == recorded
    assert ExportConfig.reduce_range_for(placement, target) is seven_bit
    assert resolve_reduce_range(placement, None, target) is seven_bit
    # restating the implied range is accepted
    ExportConfig(
        int8=True, int8_placement=placement, int8_cpu_target=target, int8_reduce_range=seven_bit
    )


def test_cli_refuses_vnni_for_the_tensorrt_placement_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = runner.invoke(
        app,
        ["export", "--weights", "x.pt", "--out", str(out), "--int8", "--int8-cpu-target", "vnni"],
    )
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "error:" in r.output and "onnxruntime" in r.output and not out.exists()


def test_cli_help_documents_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    r = runner.invoke(app, ["export", "--help"])
    text = " ".join(r.output.split())
    assert "--int8-cpu-target" in text and "AVX512-VNNI" in text and "7-bit" in text


@pytest.mark.parametrize(
    ("target", "vnni_here", "max_code", "note"),
    [("any", False, 64, False), ("vnni", False, 127, True), ("vnni", True, 127, False)],
    ids=["any", "vnni-on-a-cpu-without-vnni", "vnni-on-a-vnni-cpu"],
)
def test_int8_onnxruntime_export_records_its_cpu_target(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    busy_checkpoint: Path,
    calib_folder: Path,
    target: str,
    vnni_here: bool,
    max_code: int,
    note: bool,
) -> None:
    monkeypatch.setattr(cpuinfo, "has_vnni", lambda flags=None: vnni_here)
    logs: list[str] = []
    m = export_model(
        ExportConfig(
            weights=str(busy_checkpoint),
            out=str(tmp_path),
            int8=True,
            calib=str(calib_folder),
            calib_method="minmax",
            int8_placement="onnxruntime",
            int8_cpu_target=target,
        ),
        progress=False,
        log=logs.append,
    )
    a = next(x for x in m["artifacts"] if x["precision"] == "int8")
    assert (a["placement"], a["cpu_target"]) == ("onnxruntime", target)
    assert a["reduce_range"] is (target == "any")
    assert a["checked_as_target_runs"] is (target == "any" or vnni_here)
    codes = _conv_weight_codes(tmp_path / a["file"])
    assert codes and all(w.dtype == np.int8 for w in codes.values())
    # per-channel symmetric: the largest |code| is the top of the range (7-bit: 64, 8-bit: 127)
    assert max(int(np.abs(w).max()) for w in codes.values()) == max_code
    warned = [line for line in logs if "cannot run the int8 graph as its target will" in line]
    assert bool(warned) is note
    assert m["exported_on"]["cpu_flags"] == cpuinfo.cpu_summary()
    assert m["exported_on"]["vnni"] is vnni_here
