import os
import pickle

import pytest
import torch

from edgeyolo.errors import CheckpointError
from edgeyolo.models.checkpoint import load_checkpoint, load_state_into, save_checkpoint


def test_round_trip_with_weights_only(tmp_path):
    path = save_checkpoint(
        tmp_path / "a.pt",
        {"model": {"w": torch.ones(3)}, "epoch": 4, "cfg": {"anchors": ((1.0, 2.0),)}},
    )
    data = load_checkpoint(path)
    assert data["epoch"] == 4
    assert torch.equal(data["model"]["w"], torch.ones(3))
    assert data["cfg"]["anchors"] == ((1.0, 2.0),)
    # no temporary file is left behind
    assert sorted(os.listdir(tmp_path)) == ["a.pt"]


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "last.pt", {"epoch": 1})

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


def test_truncated_file_is_named(tmp_path):
    path = save_checkpoint(tmp_path / "x.pt", {"model": {"w": torch.randn(1000)}})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"x\.pt.*unreadable"):
        load_checkpoint(path)


def test_foreign_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "edgeyolo.checkpoint", "x": Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_plain_torch_file_is_not_ours(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not an edgeyolo checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_state_mismatch_names_keys_and_shapes():
    model = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*weight"):
        load_state_into(model, {"weight": torch.zeros(5, 3), "bias": torch.zeros(2)}, source="c")
    with pytest.raises(CheckpointError, match="missing"):
        load_state_into(model, {"weight": torch.zeros(2, 3)}, source="c")


def test_temp_files_of_killed_writers_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".last.pt.{dead_pid}.tmp"
    stale.write_bytes(b"half a checkpoint")
    live = tmp_path / f".last.pt.{os.getppid()}.tmp"  # a running process: left alone
    live.write_bytes(b"being written")
    save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
    assert not stale.exists() and live.exists()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


@pytest.mark.parametrize(
    ("name", "says"),
    [("m.onnx", "exported ONNX graph"), ("m.engine", "TensorRT engine"), ("y.weights", "darknet")],
)
def test_model_files_of_other_kinds_are_named_not_unpickled(tmp_path, name, says):
    path = tmp_path / name
    path.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(64))
    with pytest.raises(CheckpointError, match=says) as info:
        load_checkpoint(path)
    assert "pickle" not in str(info.value) and str(path) in str(info.value)
