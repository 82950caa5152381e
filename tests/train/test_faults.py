"""Fault injection: SIGKILL a real training subprocess at random moments, then ``--resume``.

After every kill each ``*.pt`` in the run folder must load (checkpoints are written atomically),
temporary files must not look like checkpoints, and the resumed run must end with exactly the
weights of an uninterrupted run with the same seed and settings.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edgeyolo.models.checkpoint import load_checkpoint

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL"),
]

EPOCHS = 3


def _train_cmd(data_yaml: Path, out: Path, *, resume: bool) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgeyolo",
        "train",
        "--data",
        str(data_yaml),
        "--out",
        str(out),
        "--img-size",
        "96",
        "--batch",
        "3",
        "--epochs",
        str(EPOCHS),
        "--workers",
        "0",
        "--eval-interval",
        "1",
        "--device",
        "cpu",
        "--seed",
        "0",
        "--no-progress",
        *(["--resume"] if resume else []),
    ]


def _env() -> dict[str, str]:
    # One thread in every process: CPU float results are reproducible across processes, and the
    # reference run can use the second core while the killed runs use the first.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env())


def _finish(proc: subprocess.Popen, log: Path) -> None:
    assert proc.wait(timeout=180) == 0, log.read_text(errors="replace")[-3000:]


def _temp_files(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if p.name.endswith(".tmp")]


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _run_and_kill(cmd: list[str], log: Path, out: Path, kind: str, arg: float) -> str:
    """Start ``cmd`` and SIGKILL it; returns what was hit. ``kind``:

    - ``"write"``: during the ``arg``-th checkpoint write (its temporary file exists),
    - ``"after_save"``: ``arg`` seconds after a new ``last.pt`` appears (the next epoch),
    - ``"time"``: ``arg`` seconds after the start.
    """
    present = {p.name for p in _temp_files(out)} if out.exists() else set()
    writes, saved_at = 0, None
    last0 = _stamp(out / "last.pt")
    proc = _start(cmd, log)
    t0 = time.monotonic()
    hit = "nothing (finished first)"
    while proc.poll() is None:
        now = time.monotonic()
        if kind == "time" and now - t0 >= arg:
            hit = f"at {now - t0:.2f} s"
            break
        if kind == "write" and out.exists():
            # every write of one file in one process uses the same temporary name: count a
            # write each time a name appears that was absent at the previous poll
            now_present = {p.name for p in _temp_files(out)}
            new = sorted(now_present - present)
            present = now_present
            writes += len(new)
            if writes >= arg:
                hit = f"during checkpoint write {writes} ({new[-1]}) at {now - t0:.2f} s"
                break
        if kind == "after_save":
            if saved_at is None and _stamp(out / "last.pt") not in (None, last0):
                saved_at = now
            if saved_at is not None and now - saved_at >= arg:
                hit = f"{now - saved_at:.2f} s after last.pt was saved, at {now - t0:.2f} s"
                break
        if now - t0 > 120:
            break
        time.sleep(0.001)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return hit


def _assert_run_folder_sound(out: Path) -> None:
    if not out.exists():
        return
    for pt in sorted(out.glob("*.pt")):
        ckpt = load_checkpoint(pt)  # raises CheckpointError if partial or corrupt
        assert "model" in ckpt, pt
        assert ("state" in ckpt) == (pt.name == "last.pt"), pt  # best.pt: inference only
    for tmp in _temp_files(out):
        # a leftover of a killed write: hidden, not ``*.pt``, so never taken for a checkpoint
        assert tmp.name.startswith(".") and not tmp.name.endswith(".pt"), tmp


def _weights(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    ckpt = load_checkpoint(path)
    return {"model": ckpt["model"], "raw": ckpt["state"]["model"], "epoch": ckpt["epoch"]}


def test_sigkill_mid_training_then_resume_matches_uninterrupted_run(
    mnist_small_yaml: Path, tmp_path: Path
) -> None:
    rng = random.Random(0)
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    ref_log = tmp_path / "ref.log"
    ref = _start(_train_cmd(mnist_small_yaml, ref_out, resume=False), ref_log)

    log = tmp_path / "killed.log"
    plan = [
        ("write", rng.choice([2, 3])),  # mid-write, after the first last.pt exists
        ("after_save", rng.uniform(0.05, 0.5)),  # resumed, then killed in the next epoch
        ("write", 1),  # resumed, killed while writing the final epoch's last.pt
    ]
    hits = []
    for kind, delay in plan:
        resume = (out / "last.pt").is_file()
        hit = _run_and_kill(_train_cmd(mnist_small_yaml, out, resume=resume), log, out, kind, delay)
        hits.append(f"{kind} {delay:.2f}: {hit} (resume={resume})")
        _assert_run_folder_sound(out)
    print("\n".join(hits))
    assert sum("finished first" not in h for h in hits) >= 2, hits
    assert "during checkpoint write" in hits[0] and "after last.pt" in hits[1], hits

    _finish(_start(_train_cmd(mnist_small_yaml, out, resume=(out / "last.pt").is_file()), log), log)
    _assert_run_folder_sound(out)
    _finish(ref, ref_log)

    got, want = _weights(out / "last.pt"), _weights(ref_out / "last.pt")
    assert got["epoch"] == want["epoch"] == EPOCHS - 1
    for part in ("model", "raw"):
        assert got[part].keys() == want[part].keys()
        differ = [
            k
            for k in want[part]
            if want[part][k].is_floating_point()
            and not torch.allclose(got[part][k], want[part][k], atol=1e-5)
        ]
        differ += [
            k
            for k in want[part]
            if not want[part][k].is_floating_point()
            and not torch.equal(got[part][k], want[part][k])
        ]
        assert not differ, f"{part}: {len(differ)} tensors differ, e.g. {differ[:5]}; {hits}"
