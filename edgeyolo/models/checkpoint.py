"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of plain data and tensors::

    {"format": "edgeyolo.checkpoint", "version": 1,
     "model_config": {...ModelConfig...},      # enough to rebuild the model
     "model": state_dict,                       # weights to run (the EMA when training used one)
     "epoch": int, "global_step": int, "best_map50": float, "metrics": {...},
     "train": {...TrainConfig...},              # how it was trained
     "state": {raw model, ema, optimizer, scheduler, scaler, rng}}   # only what --resume needs

``best.pt`` is an inference checkpoint (no ``state``: about the size of the fp32 weights), the
file to ship and export; ``last.pt`` keeps ``state`` for ``--resume``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeyolo.config import ModelConfig, model_config_from_dict
from edgeyolo.errors import CheckpointError, ConfigError
from edgeyolo.fileio import atomic_write, remove_stale_temps
from edgeyolo.models.darknet_weights import load_darknet_model
from edgeyolo.models.yolov3 import build_model

FORMAT = "edgeyolo.checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (:func:`edgeyolo.fileio.atomic_write`): a crash
    at any moment leaves either the previous file or the new one, never a partial one. Temporary
    files of writers killed earlier are removed."""
    path = Path(path)
    with atomic_write(path) as f:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, f)
    remove_stale_temps(path)
    return path


def load_checkpoint(
    path: str | Path, *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read an edgeyolo checkpoint safely (no code execution) and check that it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    foreign = _foreign_kind(path)
    if foreign:
        raise CheckpointError(f"{path}: {foreign}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: it holds Python objects other than tensors and plain data "
            f"(not an edgeyolo checkpoint, or a pickle that could run code): "
            f"{str(e).splitlines()[0]}"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: unreadable checkpoint (truncated or not a torch file): "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an edgeyolo checkpoint (no '{FORMAT}' format tag); "
            "train one with `edgeyolo train`, or load darknet weights with --pretrained"
        )
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {data.get('version')} is not supported "
            f"(this edgeyolo reads version {VERSION})"
        )
    return data


#: What a file that is not a checkpoint is, by its suffix, and what to do with it instead.
_FOREIGN = {
    ".onnx": "an exported ONNX graph, not a checkpoint: run it with `edgeyolo detect --model` or "
    "score it with `edgeyolo bench --models`; --weights takes the .pt written by `edgeyolo train`",
    ".engine": "a TensorRT engine, not a checkpoint: run it with `edgeyolo detect --model` or "
    "`edgeyolo bench --models`; --weights takes the .pt written by `edgeyolo train`",
    ".weights": "a darknet weights file, not a checkpoint: start training from it with "
    "`edgeyolo train --pretrained`",
}
_FOREIGN[".plan"] = _FOREIGN[".engine"]
_FOREIGN[".74"] = _FOREIGN[".weights"]  # darknet53.conv.74


def _foreign_kind(path: Path) -> str | None:
    """Say what ``path`` is when its suffix names another kind of model file (else ``None``)."""
    if path.suffix.lower() in _FOREIGN:
        with open(path, "rb") as f:
            if f.read(2) != b"PK":  # torch.save's zip: a checkpoint renamed oddly is still read
                return _FOREIGN[path.suffix.lower()]
    return None


def checkpoint_model_config(
    ckpt: dict[str, Any], *, source: str | Path = "checkpoint"
) -> ModelConfig:
    try:
        return model_config_from_dict(ckpt["model_config"])
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{source}: bad model_config in checkpoint: {e}") from e


def load_state_into(model: nn.Module, state: dict[str, Any], *, source: str | Path) -> None:
    """Load a state dict, turning key/shape mismatches into one :class:`CheckpointError`."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        detail = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}" if missing else "",
                f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
                if unexpected
                else "",
                f"shape mismatch {wrong[:3]}{'...' if len(wrong) > 3 else ''}" if wrong else "",
            )
            if part
        )
        raise CheckpointError(
            f"{source}: weights do not fit this model ({detail}); "
            "was it trained for another architecture or class count?"
        )
    model.load_state_dict(state)


def _is_zip(path: Path) -> bool:
    """``path`` is a file written by ``torch.save`` (a zip archive)."""
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(2) == b"PK"


def load_model(
    path: str | Path,
    cfg: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    darknet_eps: float | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as, load its weights, put it in eval mode.

    ``path`` may also be a darknet ``X.weights``: its model comes from ``cfg`` (or ``X.cfg``
    beside it, or, with neither, the official file its size names), read by
    :func:`edgeyolo.models.darknet_weights.load_darknet_model` with ``darknet_eps`` as the reader
    epsilon the file was written for (``None``: what the cfg records, else 1e-5). The second
    value is then that function's ``info`` dict (``format`` "darknet") instead of the checkpoint.

    Raises:
        CheckpointError: not a readable checkpoint or darknet file, or weights that do not fit.
        ConfigError: a darknet cfg that is not an official topology.
    """
    path = Path(path)
    darknet = path.suffix.lower() == ".weights" and not _is_zip(path)
    if cfg is not None and _is_zip(path):
        raise CheckpointError(
            f"{path}: an edgeyolo checkpoint, which carries its own model config; "
            "--cfg is for darknet .weights files: drop it"
        )
    if darknet or cfg is not None:
        model, info = load_darknet_model(path, cfg, eps=darknet_eps)
        return model.to(device).eval(), info
    ckpt = load_checkpoint(path)
    config = checkpoint_model_config(ckpt, source=path)
    model = build_model(config)
    if "model" not in ckpt:
        raise CheckpointError(f"{path}: checkpoint has no 'model' weights")
    load_state_into(model, ckpt["model"], source=path)
    return model.to(device).eval(), ckpt
