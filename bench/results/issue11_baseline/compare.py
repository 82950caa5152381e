"""Compare a fixed-seed demo run with baseline.json (issue 11: the restructuring changes nothing).

usage: python bench/results/issue11_baseline/compare.py RUN_DIR EXPORT_DIR
  e.g. after  EPOCHS=2 OUT=runs/after2 EXPORT=export/after2 BENCH_RUNS=5 bash scripts/demo.sh
Prints one line per compared item (same / DIFFERENT) and exits 1 when anything differs.
Timings are left out; floats are compared exactly (same CPU flags as the baseline's machine).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
TIMINGS = ("epoch_s", "images_per_s")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def observed(run: Path, export: Path) -> dict[str, Any]:
    """The run's values in baseline.json's layout."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    manifest = json.loads((export / "manifest.json").read_text())
    int8 = next(a for a in manifest["artifacts"] if a["precision"] == "int8")
    bench = json.loads((run / "bench" / "bench.json").read_text())["artifacts"]
    keep = ("matched", "ref_count", "other_count", "matched_fraction", "mean_iou")
    return {
        "metrics_jsonl_without_timings": [
            {k: v for k, v in r.items() if k not in TIMINGS} for r in rows
        ],
        "eval_test": {
            k: json.loads((run / "eval.json").read_text())[k] for k in ("map50", "map50_95")
        },
        "export_parity_vs_torch": manifest["checks"]["parity_vs_torch"],
        "export_int8_gate": int8["gate"],
        "export_sha256": {a["file"]: a["sha256"] for a in manifest["artifacts"]},
        "bench_map": {
            k: {
                "map50": a["map50"],
                "map50_95": a["map50_95"],
                "parity": None if not a.get("parity") else {p: a["parity"][p] for p in keep},
            }
            for k, a in bench.items()
        },
    }


def main(run: str, export: str) -> int:
    want = json.loads((HERE / "baseline.json").read_text())
    got = observed(Path(run), Path(export))
    bad = 0
    for key, value in got.items():
        ok = _same(want[key], value)
        bad += not ok
        print(f"{'same     ' if ok else 'DIFFERENT'} {key}")
        if not ok:
            print(
                f"  baseline: {json.dumps(want[key])[:600]}\n  now:      {json.dumps(value)[:600]}"
            )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
