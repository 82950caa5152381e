"""Training hooks (detectron2 style): logging, evaluation + checkpointing, progress display.

A hook sees the :class:`~edgeyolo.train.trainer.Trainer` and may read any of its state.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edgeyolo.lazy import lazy_import
from edgeyolo.models.darknet_weights import freeze_backbone

if TYPE_CHECKING:
    from edgeyolo.train.trainer import Trainer

#: Optional (the ``tensorboard`` extra): without it metrics go to metrics.jsonl/csv only.
TENSORBOARD = lazy_import("torch.utils.tensorboard", install="pip install tensorboard")


class Hook:
    """Base class; override what you need."""

    def before_train(self, trainer: Trainer) -> None: ...
    def before_epoch(self, trainer: Trainer) -> None: ...
    def after_step(self, trainer: Trainer, metrics: dict[str, float]) -> None: ...
    def after_epoch(self, trainer: Trainer) -> None: ...
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

    def after_epoch(self, trainer: Trainer) -> None:
        row = trainer.epoch_metrics
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


class EvalAndCheckpoint(Hook):
    """Every ``interval`` epochs (and at the last one) evaluates on the val split; writes
    ``last.pt`` (resumable) every epoch and ``best.pt`` (inference only) whenever val mAP@0.5
    improves."""

    def __init__(self, interval: int = 1) -> None:
        self.interval = max(1, interval)

    def after_epoch(self, trainer: Trainer) -> None:
        epoch = trainer.epoch
        last = epoch + 1 == trainer.cfg.epochs
        if (epoch + 1) % self.interval == 0 or last:
            result = trainer.evaluate()
            trainer.epoch_metrics["val_map50"] = result.map50
            trainer.epoch_metrics["val_map50_95"] = result.map50_95
            improved = result.map50 > trainer.best_map50
            if improved:
                trainer.best_map50 = result.map50
            trainer.save("last.pt")
            if improved:
                trainer.save("best.pt", resumable=False)  # an inference checkpoint
        else:
            trainer.save("last.pt")


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

    def after_step(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self._seen += int(metrics["batch_size"])
        rate = self._seen / max(1e-9, time.perf_counter() - self._t0)
        info = (
            f"loss {metrics['loss']:.3f} (box {metrics['box']:.3f} obj {metrics['obj']:.3f} "
            f"noobj {metrics['noobj']:.3f} cls {metrics['cls']:.3f}) "
            f"lr {metrics['lr']:.2e} {rate:.1f} img/s"
        )
        self._progress.update(self._task, advance=1, info=info)

    def after_epoch(self, trainer: Trainer) -> None:
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
