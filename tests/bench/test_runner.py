"""``edgeyolo bench`` on a tiny real export: the JSON keys, the report files, the CLI, and honesty
about what could not be benched."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import time
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from edgeyolo.bench.config import BenchConfig
from edgeyolo.bench.results import ArtifactResult, ArtifactSpec, BenchResult
from edgeyolo.bench.runner import _artifacts, print_report, run_bench, to_markdown, write_report
from edgeyolo.cli import app
from edgeyolo.config import ExportConfig
from edgeyolo.cpuinfo import cpu_summary
from edgeyolo.errors import ConfigError
from edgeyolo.export.pipeline import export_model
from edgeyolo.runtime.backends import open_backend
from edgeyolo.runtime.gpu import tensorrt_version
from edgeyolo.runtime.thresholds import NmsSettings

LATENCY_KEYS = {"min", "mean", "p50", "p90", "p95", "p99", "max"}
FAST = {"warmup": 1, "runs": 3}


def bench(weights, models, data, **settings) -> dict:
    """``run_bench`` of a :class:`BenchConfig` with these settings, quietly, as ``bench.json``'s
    dict."""
    return run_bench(
        BenchConfig(weights, tuple(models), data, **settings), progress=False
    ).to_dict()


@pytest.fixture(scope="module")
def typed(exported, busy_checkpoint, mnist_small_yaml) -> BenchResult:
    """The CPU bench (on a GPU machine too): the checkpoint, fp32 and fp16 graphs."""
    config = BenchConfig(
        busy_checkpoint,
        (exported,),
        mnist_small_yaml,
        batch_sizes=(2,),
        isolate=False,
        device="cpu",
        **FAST,
    )
    return run_bench(config, progress=False)


@pytest.fixture(scope="module")
def result(typed):
    return typed.to_dict()


def test_bench_json_has_the_stable_keys(result):
    arts = result["artifacts"]
    assert result["reference"] == "busy.pt"
    assert list(arts) == ["busy.pt", "model_fp32.onnx", "model_fp16.onnx"]
    for a in arts.values():
        assert set(a["latency_ms"]) == LATENCY_KEYS
        assert set(a["batches"]) == {"1", "2"} and a["batches"]["2"]["batch"] == 2
        assert a["batches"]["1"]["n"] == 3 and a["throughput_ips"] > 0
        assert 0.0 <= a["map50"] <= 1.0 and 0.0 <= a["map50_95"] <= a["map50"]
        assert {"preprocess", "compute", "postprocess"} <= set(a["stages_ms"])
        assert a["map_setting"].startswith("COCO (conf 0.001, IoU 0.5, 300 dets)")
    assert arts["busy.pt"]["parity"] is None and arts["busy.pt"]["backend"] == "pytorch"
    onnx = arts["model_fp32.onnx"]
    assert (onnx["backend"], onnx["precision"]) == ("onnxruntime", "fp32")
    # batch 1, int32/float32: num_dets [1, 1], boxes [1, 100, 4], scores and classes [1, 100]
    assert onnx["bytes_d2h"] == 4 * (1 + 100 * 4 + 100 + 100)
    assert onnx["nms"] == {"conf_thres": 0.3, "iou_thres": 0.45, "max_det": 100}
    p = onnx["parity"]
    assert {"matched", "mean_iou", "p5_iou", "score_mae"} <= set(p)
    assert {"missed", "extra", "class_disagreement", "worst_images", "iou_histogram"} <= set(p)
    # The fp32 graph is the same network: every reference box comes back, to float precision.
    assert p["ref_count"] > 20 and p["matched_fraction"] > 0.95 and p["p5_iou"] > 0.999
    assert sum(p["iou_histogram"]["counts"]) == p["matched"]
    assert arts["model_fp16.onnx"]["precision"] == "fp16"
    st = result["stability"]  # quiet or not (a test machine may be busy): the block is there
    assert {"disturbed", "reasons", "roof_before_gflops", "roof_after_gflops"} <= set(st)
    assert {"loadavg_before", "loadavg_after", "cores", "thresholds"} <= set(st)
    assert st["roof_after_gflops"] == result["header"]["compute"]["roofs"]["cpu"]["gflops_per_s"]
    assert st["roof_before_gflops"] > 0 and st["disturbed"] == bool(st["reasons"])
    for a in arts.values():
        assert isinstance(a["disturbed"], bool) and a["disturbed"] == bool(a["disturbed_reasons"])
    assert result["notes"] == []  # no int8 graph here


ARTIFACT_KEYS = [
    "file", "kind", "backend", "precision", "device", "latency_ms", "throughput_ips", "stages_ms",
    "bytes_d2h", "batches", "threads", "skipped", "nms", "cpu_target", "img_size", "compute",
    "disturbed", "disturbed_reasons", "map50", "map50_95", "parity", "map_setting",
]  # fmt: skip


def test_bench_json_keeps_its_keys_and_their_order(result):
    """bench.json's schema (bench/README.md): a typed result must write the same keys."""
    top = ["header", "reference", "artifacts", "stability", "notes", "not_available", "failed"]
    assert list(result) == top
    h = result["header"]
    assert list(h) == [
        "schema", "date", "command", "machine", "versions", "settings", "compute", "thresholds"
    ]  # fmt: skip
    assert h["schema"] == "edgeyolo.bench/1"
    assert list(h["settings"]) == [
        "weights", "data", "split", "images", "img_size", "batch_sizes", "warmup", "runs",
        "device", "threads", "isolate", "isolation",
    ]  # fmt: skip
    assert h["thresholds"]["map"] == {"conf_thres": 0.001, "iou_thres": 0.5, "max_det": 300}
    for a in result["artifacts"].values():
        assert list(a) == ARTIFACT_KEYS
        assert list(a["compute"]) == [
            "gflop_per_image",
            "gflops_per_s",
            "roof_fraction",
            "floor_ms",
        ]
        assert list(a["nms"]) == ["conf_thres", "iou_thres", "max_det"]
    # The reference is timed and compared at the export's deployment NMS (its manifest's conf 0.3).
    assert result["artifacts"]["busy.pt"]["nms"] == {
        "conf_thres": 0.3, "iou_thres": 0.45, "max_det": 100
    }  # fmt: skip


def test_the_typed_result_is_what_bench_json_holds(typed, result, tmp_path):
    assert typed.reference == "busy.pt" and list(typed.artifacts) == list(result["artifacts"])
    a = typed.artifacts["model_fp32.onnx"]
    assert isinstance(a, ArtifactResult)
    assert (a.spec.kind, a.spec.img_size, a.spec.half) == ("onnx", 128, False)
    assert a.spec.nms == NmsSettings(0.3, 0.45, 100)
    assert (a.timing.backend, a.timing.precision, a.timing.device) == ("onnxruntime", "fp32", "cpu")
    assert a.latency_ms == result["artifacts"]["model_fp32.onnx"]["latency_ms"]
    assert a.timing.p50_ms == a.latency_ms["p50"] and a.disturbed == bool(a.disturbed_reasons)
    roof = typed.header["compute"]["roofs"]["cpu"]["gflops_per_s"]
    assert a.compute.roof_fraction == pytest.approx(a.compute.gflops_per_s / roof)
    assert a.score.parity == result["artifacts"]["model_fp32.onnx"]["parity"]
    assert a.score.parity["ref_count"] > 20 and typed.artifacts["busy.pt"].score.parity is None
    assert typed.failed == () and a.to_dict() == result["artifacts"]["model_fp32.onnx"]
    # the report takes the typed result or its dict, and writes the same files from both
    from_typed, from_dict = (
        write_report(typed, tmp_path / "t"),
        write_report(result, tmp_path / "d"),
    )
    assert from_typed["json"].read_text() == from_dict["json"].read_text()
    assert from_typed["md"].read_text() == from_dict["md"].read_text() == to_markdown(typed)
    console = Console(record=True, width=120)
    print_report(typed, console)
    assert "model_fp32.onnx" in console.export_text()


def test_bench_config_normalises_its_settings(busy_checkpoint, tmp_path):
    c = BenchConfig(str(busy_checkpoint), [str(tmp_path)], "data.yaml", batch_sizes=[8, 2, 8])
    assert c == BenchConfig(busy_checkpoint, (tmp_path,), Path("data.yaml"), batch_sizes=(1, 2, 8))
    assert c.batch_sizes == (1, 2, 8) and c.models == (tmp_path,) and c.weights == busy_checkpoint
    assert (c.split, c.warmup, c.runs, c.threads, c.isolate) == ("val", 10, 100, None, True)
    assert (c.max_images, c.device, c.torch_half, c.img_size) == (None, "auto", None, None)
    assert c.isolation == (
        "each backend timed in its own process (spawn); thread counts at torch's and ONNX "
        "Runtime's defaults"
    )
    pinned = replace(c, isolate=False, threads=2)
    assert pinned.isolation == "one process; torch and ONNX Runtime intra-op threads pinned to 2"
    assert replace(c, isolate=False).isolation.endswith("(they may contend for cores)")
    with pytest.raises(FrozenInstanceError):
        c.runs = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"weights": "missing.pt"},
            "missing.pt: no such checkpoint (--weights takes the .pt file)",
        ),
        (
            {"weights": "model.onnx"},
            "model.onnx: no such checkpoint (--weights takes the .pt file)",
        ),
        (
            {"batch_sizes": (0, 8)},
            "need batches >= 1, warmup >= 0, runs >= 1; got [0, 1, 8]/10/100",
        ),
        ({"warmup": -1}, "need batches >= 1, warmup >= 0, runs >= 1; got [1, 8]/-1/100"),
        ({"runs": 0}, "need batches >= 1, warmup >= 0, runs >= 1; got [1, 8]/10/0"),
        ({"threads": 0}, "--threads must be >= 1 (or left out), got 0"),
        ({"max_images": 0}, "--max-images must be >= 1 (or left out), got 0"),
        ({"split": "dev"}, "--split must be train, val or test, got 'dev'"),
        ({"img_size": 100}, "img_size must be a positive multiple of 32, got 100"),
    ],
)
def test_bench_config_refuses_bad_settings(busy_checkpoint, change, message):
    settings = {"weights": busy_checkpoint, "models": (), "data": "data.yaml", **change}
    with pytest.raises(ConfigError) as e:
        BenchConfig(**settings)
    assert str(e.value) == message


def test_the_checkpoint_alone_at_the_size_asked_for(busy_checkpoint, mnist_small_yaml):
    """No export: the checkpoint at the deployment defaults, at ``img_size`` (not its own 128)."""
    r = bench(
        busy_checkpoint,
        (),
        mnist_small_yaml,
        batch_sizes=(1,),
        isolate=False,
        device="cpu",
        torch_half=False,
        img_size=96,
        **FAST,
    )
    assert list(r["artifacts"]) == ["busy.pt"] and r["failed"] == []
    a = r["artifacts"]["busy.pt"]
    assert a["img_size"] == 96 and r["header"]["settings"]["img_size"] == 96
    assert list(r["header"]["compute"]["gflop_per_image"]) == ["96"]
    assert a["nms"] == {"conf_thres": 0.25, "iou_thres": 0.45, "max_det": 100}
    assert 0.0 <= a["map50"] <= 1.0 and a["parity"] is None


def test_bench_header_says_how_it_was_measured(result, mnist_small_yaml):
    h = result["header"]
    assert {"date", "command", "machine", "versions", "settings", "thresholds"} <= set(h)
    assert {"cpu", "cores", "gpu"} <= set(h["machine"])
    assert h["machine"]["cpu_flags"] == cpu_summary()  # e.g. "x86_64 avx2 avx512f avx512_vnni"
    assert {"torch", "onnxruntime", "tensorrt"} <= set(h["versions"])
    s = h["settings"]
    assert (s["batch_sizes"], s["runs"], s["isolate"], s["images"]) == ([1, 2], 3, False, 2)
    assert "one process" in s["isolation"] and "contend" in s["isolation"]
    half = "busy.pt (fp16): PyTorch fp16 is benched by default on CUDA only (this run is on cpu, "
    half += "where it is slow); --torch-half forces it"
    if tensorrt_version() is None:
        assert result["not_available"] == ["TensorRT not installed: no engine benched", half]
    else:
        assert result["not_available"] == [half]
    assert result["failed"] == []


def test_bench_reports_achieved_gflops_against_the_fp32_roof(result, busy_checkpoint):
    from edgeyolo.models.checkpoint import load_model
    from edgeyolo.models.info import count_flops

    net, _ = load_model(busy_checkpoint)
    c = result["header"]["compute"]
    size = result["header"]["settings"]["img_size"]
    assert c["gflop_per_image"] == {str(size): pytest.approx(count_flops(net, size) / 1e9)}
    roof = c["roofs"]["cpu"]["gflops_per_s"]
    assert roof > 0 and c["roofs"]["cpu"]["threads"] is None
    for a in result["artifacts"].values():
        assert a["device"] == "cpu"
        g = a["compute"]["gflop_per_image"]
        assert a["compute"]["gflops_per_s"] == pytest.approx(g / (a["latency_ms"]["p50"] / 1e3))
        assert a["compute"]["roof_fraction"] == pytest.approx(a["compute"]["gflops_per_s"] / roof)
        assert a["compute"]["floor_ms"] == pytest.approx(1e3 * g / roof)
    assert "fp32 roof on cpu" in to_markdown(result)


def test_a_roof_that_cannot_be_measured_is_reported_and_keeps_the_timings(
    exported, busy_checkpoint, mnist_small_yaml, monkeypatch, tmp_path
):
    from edgeyolo.bench import roofline

    def broken(**_kw):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(roofline, "matmul_roof", broken)
    r = bench(
        busy_checkpoint,
        [exported / "model_fp32.onnx"],
        mnist_small_yaml,
        batch_sizes=(1,),
        isolate=False,
        device="cpu",
        torch_half=False,
        **FAST,
    )
    assert r["failed"] == [] and list(r["artifacts"]) == ["busy.pt", "model_fp32.onnx"]
    assert any(
        n.startswith("fp32 roof on cpu: not measured (RuntimeError: CUDA error")
        for n in r["not_available"]
    )
    assert r["header"]["compute"]["roofs"] == {}
    for a in r["artifacts"].values():
        assert a["compute"]["gflops_per_s"] > 0 and "roof_fraction" not in a["compute"]
    paths = write_report(r, tmp_path)  # Markdown, plot and table without a roof
    assert "fp32 roof on cpu: not measured" in paths["md"].read_text()
    print_report(r, Console(record=True, width=200))


def test_report_files_and_table(result, tmp_path):
    paths = write_report(result, tmp_path)
    strict = json.loads(paths["json"].read_text(), parse_constant=pytest.fail)
    assert strict["artifacts"]["model_fp32.onnx"]["latency_ms"].keys() == LATENCY_KEYS
    md = paths["md"].read_text()
    assert md == to_markdown(result)
    for key in result["artifacts"]:
        assert f"| {key} | " in md  # a summary row and a stage row each
    assert "× PyTorch" in md and "| busy.pt | pytorch | fp32 |" in md
    pytest.importorskip("matplotlib")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    console = Console(record=True, width=200)
    print_report(result, console)
    text = console.export_text()
    assert all(key in text for key in result["artifacts"]) and "TensorRT" in text


@pytest.mark.parametrize("width", [60, 80, 120])
def test_terminal_table_fits_the_terminal_without_wrapping_a_cell(result, width):
    console = Console(record=True, width=width)
    print_report(result, console)
    lines = console.export_text().splitlines()
    table = [ln for ln in lines if ln.startswith(("┃", "│"))]
    assert all(len(ln) <= width for ln in table)
    # one header line and one line per artifact: no cell was folded onto a second line
    assert len(table) == 1 + len(result["artifacts"])
    for key in result["artifacts"]:
        assert sum(ln.startswith(f"│ {key} ") for ln in table) == 1
    header = table[0]
    assert "p50 ms" in header and "×PyTorch" in header  # the core columns survive
    if width >= 120:
        assert "IoU mean / p5" in header


def test_unavailable_and_broken_models_are_reported_not_guessed(
    busy_checkpoint,
    mnist_small_yaml,
    tmp_path,
):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    models = [broken]
    if tensorrt_version() is None:
        engine = tmp_path / "model_fp32.engine"
        engine.write_bytes(b"\0")
        models.append(engine)
    r = bench(
        busy_checkpoint,
        models,
        mnist_small_yaml,
        batch_sizes=(1,),
        isolate=False,
        device="cpu",
        torch_half=False,
        **FAST,
    )
    assert list(r["artifacts"]) == ["busy.pt"]
    assert len(r["failed"]) == 1  # ModelFileError: an ExportError for an unreadable file
    assert r["failed"][0].startswith(("broken.onnx: ExportError", "broken.onnx: ModelFileError"))
    if tensorrt_version() is None:
        assert r["not_available"] == ["model_fp32.engine: TensorRT not installed: not benched"]
        assert "not benched" in to_markdown(r)


def test_isolated_timing_runs_each_backend_in_its_own_process(
    exported,
    busy_checkpoint,
    mnist_small_yaml,
):
    r = bench(
        busy_checkpoint,
        [exported / "model_fp32.onnx"],
        mnist_small_yaml,
        batch_sizes=(1,),
        threads=1,
        isolate=True,
        warmup=0,
        runs=2,
    )
    assert r["failed"] == [] and list(r["artifacts"]) == ["busy.pt", "model_fp32.onnx"]
    assert "own process" in r["header"]["settings"]["isolation"]
    assert r["artifacts"]["busy.pt"]["threads"]["torch"] == 1  # pinned inside the child
    assert r["artifacts"]["model_fp32.onnx"]["latency_ms"]["p50"] > 0


def test_cli_bench_writes_the_report(exported, busy_checkpoint, mnist_small_yaml, tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "--weights", str(busy_checkpoint), "--models", str(exported)]
    args += ["--data", str(mnist_small_yaml), "--batch", "1", "--runs", "2", "--warmup", "0"]
    args += ["--no-isolate", "--no-progress", "--out", str(out), "--json", str(tmp_path / "b.json")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} >= {"bench.json", "bench.md"}
    assert json.loads((tmp_path / "b.json").read_text())["reference"] == "busy.pt"
    assert "model_fp16.onnx" in res.output
    shutil.rmtree(out)
    res = CliRunner().invoke(app, [*args[:2], "missing.pt", *args[3:]])
    assert res.exit_code == 1 and "missing.pt: no such checkpoint" in res.output


@pytest.mark.parametrize(
    ("device", "torch_half", "where"),
    [("cpu", True, "cpu"), pytest.param("cuda", None, "cuda:0", marks=pytest.mark.gpu)],
)
def test_the_checkpoint_in_fp16_is_benched_against_its_fp32_self(
    exported, busy_checkpoint, mnist_small_yaml, device, torch_half, where
):
    """Forced on a CPU; by default on CUDA, where ONNX Runtime still runs on the CPU."""
    r = bench(
        busy_checkpoint,
        [exported / "model_fp32.onnx"],
        mnist_small_yaml,
        batch_sizes=(1,),
        isolate=False,
        device=device,
        torch_half=torch_half,
        **FAST,
    )
    arts = r["artifacts"]
    assert list(arts) == ["busy.pt", "busy.pt (fp16)", "model_fp32.onnx"]
    half = arts["busy.pt (fp16)"]
    assert (half["backend"], half["precision"], half["device"]) == ("pytorch", "fp16", where)
    assert arts["busy.pt"]["device"] == where and arts["model_fp32.onnx"]["device"] == "cpu"
    assert set(r["header"]["compute"]["roofs"]) == {where, "cpu"}
    assert half["map_setting"].startswith("COCO") and 0.0 <= half["map50"] <= 1.0
    p = half["parity"]  # the same network in half precision: nearly every fp32 box comes back
    assert p["ref_count"] > 20 and p["matched_fraction"] > 0.9 and p["mean_iou"] > 0.98
    assert arts["busy.pt"]["parity"] is None and r["failed"] == []
    assert "| busy.pt (fp16) | pytorch | fp16 |" in to_markdown(r)


def _spin_forever_ish(seconds: float) -> list[subprocess.Popen]:
    """One more CPU-bound process than this process may use, each spinning for at most
    ``seconds`` (the caller kills them sooner)."""
    from edgeyolo.bench.latency import available_cores

    loop = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(available_cores() + 1)]


def _stop(hogs: list[subprocess.Popen]) -> None:
    for p in hogs:
        p.kill()
        p.wait()


def test_a_bench_beside_cpu_hogs_is_reported_disturbed(
    exported, busy_checkpoint, mnist_small_yaml, monkeypatch, tmp_path
):
    """Spinning processes start right after the first roof is read (another job starting on a
    shared machine mid-bench) and stop after the second: the report must say so."""
    from edgeyolo.bench import roofline

    real = roofline.matmul_roof
    hogs: list[subprocess.Popen] = []
    calls = []

    def roof_then_hog(**kw):
        roof = real(**kw)
        calls.append(kw["device"])
        if len(calls) == 1:
            hogs.extend(_spin_forever_ish(120))
            time.sleep(1.0)  # let them reach full speed before the first timed call
        else:
            _stop(hogs)
        return roof

    monkeypatch.setattr(roofline, "matmul_roof", roof_then_hog)
    try:
        r = bench(
            busy_checkpoint,
            [exported / "model_fp32.onnx"],
            mnist_small_yaml,
            batch_sizes=(1,),
            isolate=False,
            device="cpu",
            torch_half=False,
            **FAST,
        )
    finally:
        _stop(hogs)
    assert calls == ["cpu", "cpu"]  # the roof before and after the timing, nothing more
    st = r["stability"]
    assert st["disturbed"] and st["reasons"], st
    # The signal that sees a job starting mid-bench even on a machine that was quiet before (the
    # fastest-of-short-calls roof and the one-minute load average can miss it there).
    assert st["others_cpu_share"] > st["thresholds"]["others_cpu_share"], st
    assert any(x.startswith("other processes used") for x in st["reasons"]), st
    assert st["roof_before_gflops"] > 0 and st["roof_after_gflops"] > 0
    assert any(a["disturbed"] and a["disturbed_reasons"] for a in r["artifacts"].values())
    paths = write_report(r, tmp_path)
    assert json.loads(paths["json"].read_text())["stability"]["disturbed"] is True
    md = paths["md"].read_text()
    assert "**DISTURBED: " in md and "!" in md.split("**DISTURBED: ")[1]
    console = Console(record=True, width=60)
    print_report(r, console)
    assert console.export_text().startswith("DISTURBED: ")


def _undertrained(result):
    """``result`` as an undertrained model's bench: every mAP 0, no box on either side."""
    z = copy.deepcopy(result)
    for a in z["artifacts"].values():
        a["map50"] = a["map50_95"] = 0.0
        if a["parity"]:
            a["parity"].update(matched=0, ref_count=0, other_count=0, matched_fraction=None)
            a["parity"].update(mean_iou=None, p5_iou=None, score_mae=None, worst_images=[])
            a["parity"]["iou_histogram"]["counts"] = [0] * len(
                a["parity"]["iou_histogram"]["counts"]
            )
    return z


def test_no_box_on_either_side_reads_nothing_to_compare(result):
    z = _undertrained(result)
    md = to_markdown(z)
    assert "| model_fp32.onnx | onnxruntime | fp32 |" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| model_fp32.onnx | onnxruntime"))
    assert "| nothing to compare |" in row and "nan" not in row.lower()
    console = Console(record=True, width=200)
    print_report(z, console)
    assert console.export_text().count("nothing to compare") == 2  # the two graphs


def _label_boxes(fig, keys):
    from matplotlib.text import Text

    fig.canvas.draw()
    labels = [t for t in fig.axes[0].texts if t.get_text().split(" ")[0] in keys]
    return [Text.get_window_extent(t) for t in labels]


def test_plot_of_an_undertrained_model_has_a_sane_axis_and_says_nothing_to_compare(result):
    pytest.importorskip("matplotlib")
    from edgeyolo.bench.report import plot_figure

    fig = plot_figure(_undertrained(result))
    ax1, ax2 = fig.axes
    lo, hi = ax1.get_ylim()
    assert -0.01 < lo < 0.0 and hi - lo >= 0.1  # not -0.04..0.04: mAP cannot be negative
    assert any("undertrained" in t.get_text() for t in ax1.texts)
    assert [t.get_text() for t in ax2.texts] == ["no matched boxes: nothing to compare"]
    assert ax2.get_xscale() == "linear" and len(ax2.get_xticks()) == 0 and not ax2.lines
    boxes = _label_boxes(fig, result["artifacts"])
    assert len(boxes) == 3  # the checkpoint and the two graphs, each named once


def test_plot_labels_of_coinciding_points_never_overlap(result):
    """Four graphs at the same latency and mAP: each name gets its own place."""
    pytest.importorskip("matplotlib")
    from edgeyolo.bench.report import plot_figure

    z = copy.deepcopy(result)
    onnx = z["artifacts"]["model_fp32.onnx"]
    for i in range(2, 5):
        z["artifacts"][f"copy{i}.onnx"] = copy.deepcopy(onnx)
    for k, a in z["artifacts"].items():  # a trained-looking set of mAPs
        a["map50"] = 0.97 if k != "busy.pt" else 0.968
    fig = plot_figure(z)
    boxes = _label_boxes(fig, z["artifacts"])
    assert len(boxes) == len(z["artifacts"]) == 6
    for i, a in enumerate(boxes):
        assert not any(a.overlaps(b) for b in boxes[i + 1 :])
    lo, hi = fig.axes[0].get_ylim()
    assert lo < 0.968 and 0.97 < hi <= 1.01 and hi - lo >= 0.1
    ax2 = fig.axes[1]
    assert ax2.get_xscale() == "log" and not ax2.texts  # every graph has matched pairs
    assert {t.get_text() for t in ax2.get_legend().get_texts()} == set(z["artifacts"]) - {"busy.pt"}
    # one colour per artifact in both panels: its marker's and its histogram's
    from matplotlib.colors import to_hex

    dots = [to_hex(c.get_facecolor()[0]) for c in fig.axes[0].collections]
    marker = dict(zip(z["artifacts"], dots, strict=True))
    for stairs in ax2.patches:
        assert to_hex(stairs.get_edgecolor()) == marker[stairs.get_label()]


def test_a_disturbed_series_marks_its_figures_and_the_ratios_that_use_it(result):
    z = copy.deepcopy(result)
    why = "batch 1: p99 25.0 ms is 2.5× its p50 10.0 ms (> 2×)"
    z["stability"].update(disturbed=True, machine_busy=False, reasons=[f"model_fp16.onnx: {why}"])
    for k, a in z["artifacts"].items():
        bad = k == "model_fp16.onnx"
        a.update(disturbed=bad, disturbed_reasons=[why] if bad else [])
    md = to_markdown(z)
    table = md.split("**DISTURBED: model_fp16.onnx: batch 1: p99 25.0 ms")[1].split("\n\n")[1]
    rows = {ln.split(" | ")[0][2:]: ln.split(" | ") for ln in table.splitlines()}
    # model, backend, precision, p50, p99, × PyTorch
    assert not rows["busy.pt"][3].endswith("!") and rows["busy.pt"][5] == "1.00"
    assert not rows["model_fp32.onnx"][3].endswith("!")
    assert not rows["model_fp32.onnx"][5].endswith("!")
    assert all(c.endswith("!") for c in rows["model_fp16.onnx"][3:6])
    z["artifacts"]["busy.pt"]["disturbed"] = True  # the reference: every ratio is suspect
    rows = [ln.split(" | ") for ln in to_markdown(z).splitlines() if ln.startswith("| model_fp32")]
    assert rows[0][5].endswith("!")
    for width in (60, 200):
        console = Console(record=True, width=width)
        print_report(z, console)
        text = console.export_text()
        assert text.startswith("DISTURBED: model_fp16.onnx: batch 1") and "unreliable" in text


def test_an_int8_graph_for_vnni_on_a_cpu_without_it_gets_a_note(
    exported, busy_checkpoint, mnist_small_yaml, monkeypatch, tmp_path
):
    from edgeyolo import cpuinfo
    from edgeyolo.bench.runner import _cpu_target_notes

    folder = tmp_path / "export"
    shutil.copytree(exported, folder)
    shutil.copy(folder / "model_fp32.onnx", folder / "model_int8.onnx")
    man = json.loads((folder / "manifest.json").read_text())
    fp32 = next(a for a in man["artifacts"] if a["file"] == "model_fp32.onnx")
    entry = {**fp32, "file": "model_int8.onnx", "precision": "int8", "cpu_target": "vnni"}
    man["artifacts"].append(entry)
    (folder / "manifest.json").write_text(json.dumps(man))
    monkeypatch.setattr(cpuinfo, "has_vnni", lambda flags=None: False)
    r = bench(
        busy_checkpoint,
        [folder / "model_int8.onnx"],
        mnist_small_yaml,
        batch_sizes=(1,),
        isolate=False,
        device="cpu",
        torch_half=False,
        **FAST,
    )
    a = r["artifacts"]["model_int8.onnx"]
    assert (a["precision"], a["cpu_target"]) == ("int8", "vnni")
    assert len(r["notes"]) == 1
    note = r["notes"][0]
    assert note.startswith("model_int8.onnx: an int8 graph for another CPU (cpu_target vnni")
    assert f"this CPU ({cpu_summary()}) has neither" in note and "may saturate" in note
    assert f"- {note}" in to_markdown(r)
    console = Console(record=True, width=60)
    print_report(r, console)
    assert "note: model_int8.onnx: an int8 graph for another CPU" in console.export_text()
    x = ArtifactSpec(
        key="x.onnx", path=folder / "x.onnx", kind="onnx", nms=NmsSettings(0.3, 0.45, 9)
    )
    assert _cpu_target_notes([replace(x, cpu_target="any")]) == []
    monkeypatch.setattr(cpuinfo, "has_vnni", lambda flags=None: True)
    assert _cpu_target_notes([replace(x, cpu_target="vnni")]) == []


def test_the_reference_repeats_the_exports_post_processing(
    busy_checkpoint, calib_folder, mnist_small_yaml, tmp_path
):
    """An export with --multi-label and a candidate cap: the checkpoint's reference run is given
    the same post-processing (read from the manifest), and the fp32 graph matches it exactly."""
    out = tmp_path / "export"
    cfg = ExportConfig(
        weights=str(busy_checkpoint), out=str(out), calib=str(calib_folder), conf_thres=0.02,
        multi_label=True, max_candidates=3,
    )  # fmt: skip
    export_model(cfg, progress=False, log=lambda _s: None)
    ref, fp32 = _artifacts(busy_checkpoint, [out / "model_fp32.onnx"])
    assert ref.kind == "pt" and ref.post == fp32.post
    assert dict(ref.post) == {"max_candidates": 3, "multi_label": True}
    with open_backend(busy_checkpoint, device="cpu", **dict(ref.post)) as b:
        assert (b.kw["multi_label"], b.kw["max_candidates"]) == (True, 3)
    r = bench(busy_checkpoint, [out / "model_fp32.onnx"], mnist_small_yaml, batch_sizes=(1,),
              isolate=False, device="cpu", torch_half=False, **FAST)  # fmt: skip
    p = r["artifacts"]["model_fp32.onnx"]["parity"]
    assert p["ref_count"] > 0 and p["matched_fraction"] == 1.0 and p["min_iou"] >= 0.999, p
