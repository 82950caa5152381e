"""The int8 gate's decision on the drop's bootstrap interval: pass, keep layers, warn, fail.

Quantization and the sensitivity ranking are faked (their real runs are tested in
test_quantize.py): each "graph" is a file whose score the test scripts as per-image matches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from onnxruntime.quantization import TensorsData
from onnxruntime.quantization.calibrate import CalibrationMethod
from typer.testing import CliRunner

import edgeyolo.cli as cli
import edgeyolo.cli.common as cli_common
import edgeyolo.export.int8_gate as int8_gate
import edgeyolo.export.pipeline as pipeline
from edgeyolo.config import ExportConfig
from edgeyolo.errors import AccuracyBudgetError, ConfigError
from edgeyolo.export import quantize
from edgeyolo.export.calib import CalibSet
from edgeyolo.export.int8_gate import GateReport, int8_with_budget
from edgeyolo.export.quantize import QuantResult
from edgeyolo.metrics.bootstrap import Matches, paired_bootstrap
from tests.metrics.synthetic_matches import one_box_matches

CONVS = tuple(f"/net/backbone/conv{i}" for i in range(6))
RANKING = [(CONVS[3], 9.0), (CONVS[1], 12.0), (CONVS[5], 15.0), (CONVS[0], 20.0)]
N = 100


def found_all_but(misses: int) -> Matches:
    """The gate set's matches of a model that misses ``misses`` of the ``N`` boxes."""
    return one_box_matches(np.arange(N) >= misses)


REFERENCE = found_all_but(0)


@pytest.fixture
def fake_quantize(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """``quantize_int8`` writes a placeholder file and quantizes every conv not excluded;
    ``layer_sensitivity`` returns :data:`RANKING`. Returns the ``exclude`` list of every call."""
    calls: list[tuple[str, ...]] = []

    def quantize_int8(fp32_path: Path, out_path: Path, *, exclude=(), **_k: object) -> QuantResult:
        calls.append(tuple(exclude))
        Path(out_path).write_bytes(b"int8 graph")
        kept = tuple(c for c in CONVS if c in exclude)
        quantized = tuple(c for c in CONVS if c not in exclude)
        return QuantResult(Path(out_path), "minmax", quantized, kept)

    monkeypatch.setattr(quantize, "quantize_int8", quantize_int8)
    monkeypatch.setattr(int8_gate, "layer_sensitivity", lambda *_a, **_k: list(RANKING))
    return calls


def scripted(misses: list[int]) -> Callable[[Path], Matches]:
    """An evaluator whose k-th graph misses ``misses[k]`` boxes."""
    it: Iterator[int] = iter(misses)
    return lambda _path: found_all_but(next(it))


def gate(tmp_path: Path, misses: list[int], logs: list[str], **kwargs: object) -> GateReport:
    return int8_with_budget(
        tmp_path / "fp32.onnx",
        tmp_path / "int8.onnx",
        calib=CalibSet(np.zeros((1, 3, 32, 32), np.float32), (), "", "calib"),
        method="minmax",
        ranges=TensorsData(CalibrationMethod.MinMax, {}),
        evaluate=scripted(misses),
        reference=REFERENCE,
        **{"max_drop": 1.0, "max_steps": 3, "log": logs.append, **kwargs},
    )


def test_regimes_are_what_the_interval_says() -> None:
    """The scripted models sit where the tests below need them (budget 1.0 point)."""
    same = paired_bootstrap(REFERENCE, found_all_but(0))
    close = paired_bootstrap(REFERENCE, found_all_but(1))  # 0.99 points: within, but noisy
    broken = paired_bootstrap(REFERENCE, found_all_but(20))
    assert same.high == 0.0
    assert close.drop <= 1.0 < close.high
    assert broken.drop > 1.0


def test_passes_when_the_upper_bound_is_within_budget(
    tmp_path: Path, fake_quantize: list[tuple[str, ...]]
) -> None:
    logs: list[str] = []
    report = gate(tmp_path, [0], logs)
    assert report.decision == "passed" and report.passed and report.sensitivity == ()
    assert fake_quantize == [()] and (tmp_path / "int8.onnx").exists()
    d = report.to_dict()
    assert (d["drop"], d["low"], d["high"], d["decided"]) == (0.0, 0.0, 0.0, True)
    assert (d["level"], d["resamples"], d["n_images"]) == (0.95, 1000, N)
    assert not any("warning" in line for line in logs)


def test_keeps_the_most_sensitive_layers_out_until_the_upper_bound_holds(
    tmp_path: Path, fake_quantize: list[tuple[str, ...]]
) -> None:
    """A point estimate within budget is not enough: the 0.99-point step (interval over 1) is
    followed by one more exclusion."""
    logs: list[str] = []
    report = gate(tmp_path, [20, 1, 0], logs)
    assert fake_quantize == [(), (CONVS[3],), (CONVS[3], CONVS[1])]
    assert report.decision == "passed" and report.excluded == (CONVS[1], CONVS[3])
    assert [s.interval.drop for s in report.steps][1] <= 1.0 < report.steps[1].interval.high
    assert report.to_dict()["steps"][1]["high"] == report.steps[1].interval.high
    assert sum(line.startswith("int8 step") for line in logs) == 3
    assert "interval" in logs[0]


def test_undecided_warns_with_the_images_needed_and_keeps_the_graph(
    tmp_path: Path, fake_quantize: list[tuple[str, ...]]
) -> None:
    logs: list[str] = []
    report = gate(tmp_path, [20, 1, 1, 1], logs)
    iv = report.interval
    assert report.decision == "undecided" and not report.passed
    assert len(fake_quantize) == 4  # the loop ran to max_steps trying to make the bound hold
    assert (tmp_path / "int8.onnx").exists()
    needed = report.images_needed
    assert needed == int(np.ceil(N * (iv.half_width / (1.0 - iv.drop)) ** 2)) and needed > N
    warning = [line for line in logs if line.startswith("warning:")]
    assert len(warning) == 1 and f"about {needed} gate images" in warning[0]
    assert "too small to decide" in warning[0] and "--strict" in warning[0]
    d = report.to_dict()
    assert (d["decision"], d["decided"], d["images_needed"]) == ("undecided", False, needed)


def test_undecided_fails_with_strict_and_removes_the_graph(
    tmp_path: Path, fake_quantize: list[tuple[str, ...]]
) -> None:
    logs: list[str] = []
    with pytest.raises(AccuracyBudgetError, match="too small to decide") as err:
        gate(tmp_path, [1, 1, 1, 1], logs, strict=True)
    report: GateReport = err.value.report
    assert report.decision == "undecided" and report.strict
    assert f"about {report.images_needed} gate images" in str(err.value)
    assert not (tmp_path / "int8.onnx").exists()
    assert not any(line.startswith("warning:") for line in logs)


def test_a_drop_over_budget_fails_without_strict(
    tmp_path: Path, fake_quantize: list[tuple[str, ...]]
) -> None:
    with pytest.raises(AccuracyBudgetError, match="below fp32 after 4 attempts") as err:
        gate(tmp_path, [20, 20, 20, 20], [])
    report: GateReport = err.value.report
    assert report.decision == "failed" and report.images_needed is None
    assert not (tmp_path / "int8.onnx").exists()
    for i in range(4):
        assert f"step {i}:" in str(err.value)


def test_strict_needs_the_gate_to_run() -> None:
    assert ExportConfig(int8=True, data="d.yaml", int8_strict=True).int8_strict
    for cfg in ({"int8": True}, {"data": "d.yaml"}, {}):
        with pytest.raises(ConfigError, match="--strict .* --int8 and --data"):
            ExportConfig(**cfg, int8_strict=True)


@pytest.mark.parametrize("columns", [60, 120])
def test_cli_passes_strict_and_prints_the_gate_with_its_interval(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_quantize: list[tuple[str, ...]],
    columns: int,
) -> None:
    """``--strict`` reaches ExportConfig; the gate's record in the manifest is printed as one
    line: drop, interval, budget, decision and the images that would decide."""
    report = gate(tmp_path, [1, 1, 1, 1], [])
    seen: list[ExportConfig] = []

    def export_model(cfg: ExportConfig, **_k: object) -> dict:
        seen.append(cfg)
        gate_record = {"data": cfg.data, "split": cfg.val_split, **report.to_dict()}
        artifact = {"file": "model_int8.onnx", "precision": "int8", "kind": "onnx", "bytes": 1}
        return {
            "artifacts": [{**artifact, "gate": gate_record}],
            "checks": {"parity_vs_torch": {}},
            "nms": {"conf_thres": 0.25},
        }

    monkeypatch.setattr(pipeline, "export_model", export_model)
    monkeypatch.setattr(cli_common.console, "width", columns)
    args = ["export", "--weights", "w.pt", "--int8", "--data", "d.yaml", "--no-progress"]
    r = CliRunner().invoke(cli.app, [*args, "--strict"])
    assert r.exit_code == 0, r.output
    assert seen[0].int8_strict and seen[0].int8_max_drop == 1.0
    iv = report.interval
    text = " ".join(r.output.split())
    assert (
        f"int8 gate ({N} val images): mAP@0.5 drop {iv.drop:.2f} points, 95% interval "
        f"{iv.low:.2f} to {iv.high:.2f}, budget 1.00: undecided, about "
        f"{report.images_needed} images would decide"
    ) in text
    r = CliRunner().invoke(cli.app, args)
    assert r.exit_code == 0 and not seen[1].int8_strict
    r = CliRunner().invoke(cli.app, ["export", "--weights", "w.pt", "--strict"])
    assert r.exit_code == 1 and "error: --strict" in r.output and len(seen) == 2
