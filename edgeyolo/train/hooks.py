"""Training hooks (detectron2 style) and the per-epoch record they receive.

A hook sees the :class:`~edgeyolo.train.trainer.Trainer` and may read any of its state. What
hooks report on comes to them as data, not through one another: ``after_step`` gets the step's
metrics and ``after_epoch`` gets an :class:`EpochResult` that the trainer completes (training
means, evaluation, best-so-far) before it calls the first hook. So the order of ``trainer.hooks``
never changes what a hook sees: the checkpoint hook and the metrics writer may come in any order.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edgeyolo.lazy import lazy_import
from edgeyolo.loss import COMPONENTS
from edgeyolo.metrics.coco_map import MapResult
from edgeyolo.models.darknet_weights import freeze_backbone

if TYPE_CHECKING:
    from edgeyolo.train.trainer import Trainer

__all__ = [
    "Checkpointer",
    "EpochResult",
    "FreezeBackbone",
    "Hook",
    "MetricsWriter",
    "ProgressBar",
]

#: Optional (the ``tensorboard`` extra): without it metrics go to metrics.jsonl/csv only.
TENSORBOARD = lazy_import("torch.utils.tensorboard", install="pip install tensorboard")


@dataclass(frozen=True)
class EpochResult:
    """What one epoch produced: every hook's ``after_epoch`` receives the same record.

    Attributes:
        epoch: the epoch's number, 1-based.
        train: per-image means over the epoch (over all processes under DDP) of ``"loss"`` and
            of each :data:`~edgeyolo.loss.COMPONENTS` entry, in that order.
        lr: the learning rate after the epoch's last step.
        epoch_s: wall seconds of the epoch's steps (evaluation excluded).
        images: images trained on in the epoch (all processes).
        images_per_s: ``images / epoch_s``.
        val: the validation result when this epoch was evaluated (every ``eval_interval``
            epochs and the last, on the main process), else None.
        improved: ``val`` beat every earlier epoch's mAP@0.5; ``trainer.best_map50`` already
            holds the new best.
    """

    epoch: int
    train: Mapping[str, float]
    lr: float
    epoch_s: float
    images: int
    images_per_s: float
    val: MapResult | None = None
    improved: bool = False

    def row(self) -> dict[str, Any]:
        """The metrics row of ``metrics.jsonl`` / ``metrics.csv`` and of the checkpoints:
        ``epoch``, ``train_<name>`` for each of ``train``, ``lr``, ``epoch_s``,
        ``images_per_s``, then ``val_map50`` and ``val_map50_95`` when evaluated."""
        row: dict[str, Any] = {
            "epoch": self.epoch,
            **{f"train_{k}": v for k, v in self.train.items()},
            "lr": self.lr,
            "epoch_s": self.epoch_s,
            "images_per_s": self.images_per_s,
        }
        if self.val is not None:
            row["val_map50"] = self.val.map50
            row["val_map50_95"] = self.val.map50_95
        return row


class Hook:
    """Base class; override what you need. Called in ``trainer.hooks`` order, which does not
    change what any hook receives (see the module docstring)."""

    def before_train(self, trainer: Trainer) -> None: ...
    def before_epoch(self, trainer: Trainer) -> None: ...
    def after_step(self, trainer: Trainer, metrics: Mapping[str, float]) -> None: ...
    def after_epoch(self, trainer: Trainer, result: EpochResult) -> None: ...
    def after_train(self, trainer: Trainer) -> None: ...


class MetricsWriter(Hook):
    """One row per epoch to ``metrics.jsonl`` and ``metrics.csv``; TensorBoard if installed."""

    def __init__(self, out: Path, *, tensorboard: bool = True) -> None:
        self.out = out
        self.tensorboard = tensorboard
        self._tb: Any = None
        self._fields: list[str] | None = None

    def before_train(self, trainer: Trainer) -> None:
        if self.tensorboard:
            if TENSORBOARD.available():
                self._tb = TENSORBOARD.SummaryWriter(str(self.out / "tensorboard"))
            else:
                trainer.log("TensorBoard not installed: metrics go to metrics.jsonl/csv only")
        csv_path = self.out / "metrics.csv"
        if not trainer.resume:  # a new run in an old folder starts new metrics files
            for name in ("metrics.jsonl", "metrics.csv"):
                (self.out / name).unlink(missing_ok=True)
        if csv_path.exists():  # resuming: keep the same columns
            with open(csv_path, newline="") as f:
                header = next(csv.reader(f), None)
            self._fields = header or None

    def after_epoch(self, trainer: Trainer, result: EpochResult) -> None:
        row = result.row()
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        csv_path = self.out / "metrics.csv"
        if self._fields is None:
            self._fields = list(row)
            with open(csv_path, "w", newline="") as f:
                csv.writer(f).writerow(self._fields)
        with open(csv_path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self._fields])
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self._tb.add_scalar(k, v, row["epoch"])
            self._tb.flush()

    def after_train(self, trainer: Trainer) -> None:
        if self._tb is not None:
            self._tb.close()


class Checkpointer(Hook):
    """Writes ``last.pt`` (resumable) after every epoch and ``best.pt`` (inference only) after
    each epoch whose validation mAP@0.5 improved (``result.improved``); the trainer evaluates."""

    def after_epoch(self, trainer: Trainer, result: EpochResult) -> None:
        trainer.save("last.pt")
        if result.improved:
            trainer.save("best.pt", resumable=False)  # an inference checkpoint


class ProgressBar(Hook):
    """A rich progress bar over the steps of each epoch with losses, lr and images/s."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._task: Any = None
        self._t0 = 0.0
        self._seen = 0

    def before_epoch(self, trainer: Trainer) -> None:

        self._progress = Progress(
            TextColumn(f"epoch {trainer.epoch + 1}/{trainer.cfg.epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=trainer.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=trainer.steps_per_epoch, info="")
        self._t0 = time.perf_counter()
        self._seen = 0

    def after_step(self, trainer: Trainer, metrics: Mapping[str, float]) -> None:
        self._seen += int(metrics["batch_size"])
        rate = self._seen / max(1e-9, time.perf_counter() - self._t0)
        parts = " ".join(f"{k} {metrics[k]:.3f}" for k in COMPONENTS)
        info = f"loss {metrics['loss']:.3f} ({parts}) lr {metrics['lr']:.2e} {rate:.1f} img/s"
        if self._progress is None:  # more steps than steps_per_epoch: the bar is done
            return
        self._progress.update(self._task, advance=1, info=info)
        if self._progress.finished:  # stop the live display before the trainer evaluates
            self._stop()

    def after_epoch(self, trainer: Trainer, result: EpochResult) -> None:
        self._stop()  # when the epoch had fewer steps than expected

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class FreezeBackbone(Hook):
    """Backbone frozen (no gradients) for the first ``epochs`` epochs, trainable after.

    Decided by epoch number, so a resumed run freezes or not exactly as the original would.
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def before_epoch(self, trainer: Trainer) -> None:

        frozen = trainer.epoch < self.epochs
        model = getattr(trainer.model, "module", trainer.model)
        if n := freeze_backbone(model, frozen):
            state = "frozen" if frozen else "unfrozen"
            trainer.log(f"backbone {state} ({n} tensors) at epoch {trainer.epoch + 1}")
