"""`edgeyolo export` end to end through the CLI and the library (real ONNX Runtime)."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from typer.testing import CliRunner

from edgeyolo.cli import app
from edgeyolo.config import ExportConfig
from edgeyolo.errors import ConfigError
from edgeyolo.export.pipeline import export_model
from edgeyolo.runtime.manifest import read_manifest, sha256_file

runner = CliRunner()


def test_export_fp32_fp16_writes_checked_files_and_manifest(
    tmp_path, busy_checkpoint, calib_folder
):
    out = tmp_path / "exp"
    r = runner.invoke(
        app,
        [
            "export",
            "--weights",
            str(busy_checkpoint),
            "--out",
            str(out),
            "--fp16",
            "--calib",
            str(calib_folder),
            "--conf",
            "0.3",
            "--batch",
            "4",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    m = read_manifest(out)
    files = {a["precision"]: a for a in m["artifacts"]}
    assert set(files) == {"fp32", "fp16"} and all(a["kind"] == "onnx" for a in files.values())
    for a in files.values():
        assert sha256_file(out / a["file"]) == a["sha256"]
    assert m["input"]["shape"] == ["batch", 3, 128, 128] and m["input"]["max_batch"] == 4
    assert m["outputs"] == ["num_dets", "boxes", "scores", "classes"]
    assert m["nms"]["conf_thres"] == 0.3 and m["classes"] == [str(i) for i in range(10)]
    assert len(m["anchors"]) == 2 and m["strides"] == [32, 16]
    assert m["source"]["sha256"] == sha256_file(busy_checkpoint)
    fp32 = m["checks"]["parity_vs_torch"]["fp32"]
    assert fp32["ref_count"] > 0 and fp32["matched_fraction"] == 1.0 and fp32["min_iou"] > 0.999
    assert m["simplify"]["nodes_after"] < m["simplify"]["nodes_before"]
    g = onnx.load(str(out / "model_fp32.onnx"))
    assert g.opset_import[0].version >= 17
    assert "fp16" in r.output and "parity" in r.output


def test_raw_export_and_its_manifest(tmp_path, busy_checkpoint, calib_folder):
    m = export_model(
        ExportConfig(
            weights=str(busy_checkpoint), out=str(tmp_path), raw=True, calib=str(calib_folder)
        ),
        progress=False,
        log=lambda _s: None,
    )
    assert m["raw"] and m["outputs"] == ["head0", "head1"]
    assert [a["file"] for a in m["artifacts"]] == ["model_raw.onnx"]


def test_not_our_checkpoint_is_one_error_line(tmp_path):
    bad = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, bad)
    r = runner.invoke(app, ["export", "--weights", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1
    assert "error:" in r.output and "other.pt" in r.output and "Traceback" not in r.output


def test_engine_without_tensorrt_fails_first_and_says_what_to_install(tmp_path, busy_checkpoint):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here; this test is about machines without it")
    except ImportError:
        pass
    out = tmp_path / "o"
    r = runner.invoke(
        app, ["export", "--weights", str(busy_checkpoint), "--out", str(out), "--engine"]
    )
    assert r.exit_code == 1
    assert "TensorRT" in r.output and "install" in r.output.lower()
    assert not out.exists()  # nothing was written before the check


def test_int8_with_empty_calibration_folder_is_named(tmp_path, busy_checkpoint):
    empty = tmp_path / "nothing"
    empty.mkdir()
    r = runner.invoke(
        app,
        [
            "export",
            "--weights",
            str(busy_checkpoint),
            "--out",
            str(tmp_path / "o"),
            "--int8",
            "--calib",
            str(empty),
        ],
    )
    assert r.exit_code == 1 and "nothing" in r.output and "Traceback" not in r.output


def test_impossible_settings_are_config_errors():
    with pytest.raises(ConfigError, match="--int8 needs the decode"):
        ExportConfig(weights="x", raw=True, int8=True)
    with pytest.raises(ConfigError, match="calibration method 'kl'"):
        ExportConfig(weights="x", calib_method="kl")
    with pytest.raises(ConfigError, match="opset"):
        ExportConfig(weights="x", opset=13)
    assert ExportConfig(fp16=True, int8=True).precisions == ("fp32", "fp16", "int8")


def test_manifest_is_json_serialisable_as_written(tmp_path, busy_checkpoint, calib_folder):
    export_model(
        ExportConfig(weights=str(busy_checkpoint), out=str(tmp_path), calib=str(calib_folder)),
        progress=False,
        log=lambda _s: None,
    )
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["versions"]["onnxruntime"] and data["created"].endswith("+00:00")


def test_int8_export_records_calibration_and_gate(
    tmp_path, busy_checkpoint, calib_folder, mnist_small_yaml
):
    from edgeyolo.export.calib import load_calibration

    out = tmp_path / "q"
    logs: list[str] = []
    m = export_model(
        ExportConfig(
            weights=str(busy_checkpoint),
            out=str(out),
            int8=True,
            calib=str(calib_folder),
            calib_method="minmax",
            data=str(mnist_small_yaml),
            val_split="train",
            int8_max_drop=100.0,
        ),
        progress=False,
        log=logs.append,
    )
    a = next(x for x in m["artifacts"] if x["precision"] == "int8")
    g = onnx.load(str(out / a["file"]))
    assert any(n.op_type == "QuantizeLinear" for n in g.graph.node)
    cal = a["calibration"]
    expected = load_calibration(calib_folder, img_size=128, progress=False)
    assert cal["method"] == "minmax" and cal["images"] == len(expected.files)
    assert cal["sha256"] == expected.sha256
    # heads stay fp32 by default; the gate ran on the given split and passed its (loose) budget
    assert sorted(a["kept_fp32"]) == ["/net/stages.0/head/Conv", "/net/stages.1/head/Conv"]
    assert a["gate"]["passed"] and a["gate"]["split"] == "train" and a["gate"]["steps"]
    assert (a["placement"], a["reduce_range"]) == ("tensorrt", False)  # full-range weights
    assert a["cpu_target"] == "gpu"  # on a CPU the tensorrt placement is a float simulation
    # a gate whose fp32 reference finds nothing cannot judge int8, and the log says so
    blind = any("the int8 gate cannot tell" in line for line in logs)
    assert blind == (a["gate"]["fp32_map50"] < 1.0)
    assert "int8" in m["checks"]["parity_vs_torch"]


def test_darknet_export_reads_back_bit_exact(tmp_path, busy_checkpoint, calib_folder):
    from edgeyolo.models import build_model
    from edgeyolo.models.checkpoint import load_model
    from edgeyolo.models.darknet_weights import read_darknet
    from edgeyolo.runtime.backends import artifacts_in

    m = export_model(
        ExportConfig(
            weights=str(busy_checkpoint), out=str(tmp_path), darknet=True, calib=str(calib_folder)
        ),
        progress=False,
        log=lambda _s: None,
    )
    a = next(x for x in m["artifacts"] if x["kind"] == "darknet")
    assert a["file"] == "yolov3-tiny.weights" and sha256_file(tmp_path / a["file"]) == a["sha256"]
    src, _ = load_model(busy_checkpoint)
    dst = build_model(src.config)
    report = read_darknet(tmp_path / a["file"], dst)
    assert not report.skipped and report.floats_read == a["floats"]
    for (k, v), (k2, v2) in zip(src.state_dict().items(), dst.state_dict().items(), strict=True):
        if "num_batches" not in k:
            assert k == k2 and torch.equal(v, v2), k
    # the bench and the runtime only pick up runnable files
    assert [p.name for p in artifacts_in(tmp_path)] == ["model_fp32.onnx"]
