"""One timed run of the whole ``edgeyolo train`` command, and a JSON row of what it gave.

    python bench/recipe_run.py --name tiny10 --seed 0 --json bench/results/issue22/runs.jsonl \\
        [--test] -- --data data/mnist/data.yaml --model yolov3-tiny --img-size 320 ... --out runs/x

Everything after ``--`` is passed to ``edgeyolo train`` as it is, plus ``--seed``, run as a
child process whose wall time (start to exit, imports and set-up included) is the figure. The
row holds the wall time, the command, every epoch's metrics row (``metrics.jsonl``: val mAP,
epoch seconds), best.pt's val mAP@0.5 and, with ``--test`` only (the final runs: test is scored
once, after every choice was made on val), ``edgeyolo eval --split test`` of best.pt.
``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA`` and thread variables of the environment are
recorded with it (the AVX2 row of 2026-12-06 predates ``ONEDNN_MAX_CPU_ISA`` there).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgeyolo.cpuinfo import cpu_summary


def option(args: list[str], name: str) -> str | None:
    """The value of ``name`` in ``args`` (``--name VALUE``), or None."""
    return args[args.index(name) + 1] if name in args else None


def evaluate(best: Path, data: str, split: str, out: Path) -> dict[str, Any]:
    """``edgeyolo eval`` of ``best`` on ``split``: its JSON, plus the command's wall time."""
    cmd = ["edgeyolo", "eval", "--weights", str(best), "--data", data, "--split", split,
           "--json", str(out)]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    result = json.loads(out.read_text())
    return {"map50": result["map50"], "map50_95": result["map50_95"], "wall_s": wall}


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        raise SystemExit("usage: python bench/recipe_run.py [options] -- EDGEYOLO-TRAIN-OPTIONS")
    cut = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--name", required=True, help="the row's name")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, required=True, help="append the row to this JSON lines")
    p.add_argument("--test", action="store_true", help="also score best.pt on test (final runs)")
    a = p.parse_args(argv[:cut])
    train_args = [*argv[cut + 1 :], "--seed", str(a.seed)]
    out = Path(option(train_args, "--out") or "runs/train")
    data = option(train_args, "--data") or ""
    cmd = ["edgeyolo", "train", *train_args]
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    done = [line for line in proc.stdout.splitlines() if line.startswith("done in")]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    vals = [r["val_map50"] for r in rows if "val_map50" in r]
    row: dict[str, Any] = {
        "name": a.name,
        "seed": a.seed,
        "started": started,
        "command": " ".join(cmd),
        "train_wall_s": wall,
        "done_line": done[-1] if done else None,
        "best_val_map50": max(vals) if vals else None,
        "epochs": rows,
        "cpu_flags": cpu_summary(),
        "env": {
            k: os.environ[k]
            for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS")
            if k in os.environ
        },  # fmt: skip
    }
    if a.test:
        row["test"] = evaluate(out / "best.pt", data, "test", out / "eval_test.json")
    with open(a.json, "a") as f:
        f.write(json.dumps(row) + "\n")
    test = f", test mAP@0.5 {row['test']['map50']:.4f}" if a.test else ""
    print(f"{a.name} seed {a.seed}: {wall:.0f} s, best val mAP@0.5 {row['best_val_map50']}{test}")


if __name__ == "__main__":
    main()
