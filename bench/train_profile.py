"""Where the time of `edgeyolo train` goes: one epoch (or a few), part by part, per step and per
epoch, on the CPU or a GPU.

    python bench/train_profile.py --json bench/results/issue22/profile_before.json -- \\
        --data data/mnist/data.yaml --model yolov3-tiny --img-size 320 --eval-img-size 416 \\
        --epochs 20 --batch 16 --warmup-epochs 1 --workers 1 --scale 0.75 1.25 --translate 0.1 \\
        --colour-jitter 0.2 --eval-interval 2 --out runs/profile --no-progress

Everything after ``--`` is ``edgeyolo train``'s own options, parsed by that command, so the
trainer profiled is the one the command would build for them. Nothing in the trainer is changed:
its pieces are timed from outside, on the instance:

- **data wait**: the time the training loop waits for the loader's next batch (with
  ``--workers N > 0`` the workers decode and augment beside the training, on the same cores);
- **forward**: the model's forward (forward pre/post hooks on the training model);
- **loss**: ``trainer.loss_fn``; **backward**: from the loss to the optimizer step (the finite
  check, ``zero_grad`` and ``backward``); **optimizer**: its step (step pre/post hooks);
  **schedule**: ``scheduler.step``; **EMA**: ``ema.update_parameters``;
- **other**: the rest of the step (moving the batch, the metrics, the hooks);
- **validation**: ``trainer.evaluate``, split into reading + letterboxing the images, the
  forward, decode + NMS, and the COCO scoring; counted per epoch as one validation every
  ``--eval-interval`` epochs;
- **checkpoints**: ``trainer.save`` (``last.pt`` each epoch, ``best.pt`` when val improved;
  counted per epoch as ``last.pt`` plus one ``best.pt`` per validation).

Beside the training, ``--data-samples K`` samples are read and transformed in this process, one
transform at a time (decode, letterbox, affine, colour jitter, box clean-up, to float), with
``collate``: the CPU cost of the data pipeline per image, whichever process pays it.

``--threads`` sets torch's intra-op threads; ``--max-steps`` cuts each epoch short (per-epoch
figures are then the per-step means times the epoch's steps); ``--skip-steps`` leaves the first
steps out of the means.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import typer

import edgeyolo.evaluate.evaluator as evaluator_module
import edgeyolo.evaluate.predict as predict_module
from edgeyolo.cli import train as cli_train
from edgeyolo.config import TrainConfig
from edgeyolo.data.dataset import DetectionDataset, collate, from_v2, to_v2
from edgeyolo.runtime.environment import environment
from edgeyolo.train.trainer import Trainer

#: the training step's parts, in the order of the table
STEP_PARTS = ("data wait", "forward", "loss", "backward", "optimizer", "schedule", "EMA", "other")
#: validation's parts
VAL_PARTS = ("val read+letterbox", "val forward", "val decode+NMS", "val COCO mAP", "val other")


class Clock:
    """Named lists of durations (seconds)."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self.marks: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.times[name].append(seconds)

    def total(self, name: str) -> float:
        return sum(self.times.get(name, []))

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, timed under ``name``."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)

        return timed


class TimedScheduler:
    """The trainer's scheduler with ``step`` timed (a proxy: the scheduler's own ``__dict__``
    is its checkpointed state and stays untouched)."""

    def __init__(self, scheduler: Any, clock: Clock) -> None:
        self._scheduler = scheduler
        self._clock = clock

    def step(self) -> None:
        t0 = time.perf_counter()
        self._scheduler.step()
        self._clock.add("schedule", time.perf_counter() - t0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scheduler, name)


def parse_train_options(argv: list[str]) -> TrainConfig:
    """The :class:`TrainConfig` that ``edgeyolo train ARGV`` builds (its own parser and
    checks): the command runs with its trainer replaced by one that only keeps the config."""
    captured: list[TrainConfig] = []

    class Keep:
        @staticmethod
        def train(cfg: TrainConfig, **_: Any) -> None:
            captured.append(cfg)
            raise SystemExit(0)

    app = typer.Typer()
    app.command()(cli_train.train)
    saved = cli_train._TRAINER
    cli_train._TRAINER = Keep  # type: ignore[assignment]
    try:
        with contextlib.suppress(SystemExit):
            app(argv, standalone_mode=False)
    finally:
        cli_train._TRAINER = saved
    if not captured:
        raise SystemExit(f"edgeyolo train {' '.join(argv)}: the options did not parse")
    return captured[0]


def channels_last(trainer: Trainer) -> None:
    """The training model and the evaluated copy in channels-last memory, and their inputs."""

    def to_cl(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])

    models = [trainer.model] + ([trainer.ema.module] if trainer.ema is not None else [])
    for m in models:
        m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        m.register_forward_pre_hook(to_cl)


def instrument(trainer: Trainer, clock: Clock, max_steps: int | None) -> None:
    """Time the trainer's pieces (module docstring) by wrapping them on the instance."""
    model = trainer.model
    state: dict[str, float] = {}

    def fwd_pre(module: torch.nn.Module, args: Any) -> None:
        state["fwd0"] = time.perf_counter()

    def fwd_post(module: torch.nn.Module, args: Any, out: Any) -> None:
        if module.training:
            clock.add("forward", time.perf_counter() - state["fwd0"])
        else:
            clock.add("val forward", time.perf_counter() - state["fwd0"])

    model.register_forward_pre_hook(fwd_pre)
    model.register_forward_hook(fwd_post)
    if trainer.ema is not None:  # the evaluated copy
        trainer.ema.module.register_forward_pre_hook(fwd_pre)
        trainer.ema.module.register_forward_hook(fwd_post)

    loss_fn = trainer.loss_fn

    def loss(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = loss_fn(*args, **kwargs)
        state["loss_end"] = time.perf_counter()
        clock.add("loss", state["loss_end"] - t0)
        return out

    trainer.loss_fn = loss  # type: ignore[assignment]

    def opt_pre(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        state["opt0"] = time.perf_counter()
        clock.add("backward", state["opt0"] - state["loss_end"])

    def opt_post(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        clock.add("optimizer", time.perf_counter() - state["opt0"])

    trainer.optimizer.register_step_pre_hook(opt_pre)
    trainer.optimizer.register_step_post_hook(opt_post)
    trainer.scheduler = TimedScheduler(trainer.scheduler, clock)  # type: ignore[assignment]
    if trainer.ema is not None:
        trainer.ema.update_parameters = clock.wrap(  # type: ignore[method-assign]
            "EMA", trainer.ema.update_parameters
        )
    run_step = trainer.run_step
    trainer.run_step = clock.wrap("step", run_step)  # type: ignore[method-assign]
    trainer.evaluate = clock.wrap("validation", trainer.evaluate)  # type: ignore[method-assign]
    save = trainer.save

    def timed_save(name: str, *, resumable: bool = True) -> Path:
        t0 = time.perf_counter()
        try:
            return save(name, resumable=resumable)
        finally:
            clock.add(f"checkpoint {name}", time.perf_counter() - t0)

    trainer.save = timed_save  # type: ignore[method-assign]
    make_loader = trainer._loader

    def loader(epoch: int) -> Iterator[Any]:
        it = iter(make_loader(epoch))
        n = 0
        while max_steps is None or n < max_steps:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            clock.add("data wait", time.perf_counter() - t0)
            n += 1
            yield batch

    trainer._loader = loader  # type: ignore[assignment,method-assign]


@contextlib.contextmanager
def validation_parts(clock: Clock) -> Iterator[None]:
    """Time the evaluation's reading + letterboxing, model + NMS and COCO scoring."""
    saved = (
        predict_module.network_input,
        evaluator_module.detect_batch,
        evaluator_module.compute_map,
    )
    predict_module.network_input = clock.wrap("val read+letterbox", saved[0])
    evaluator_module.detect_batch = clock.wrap("val forward+NMS", saved[1])
    evaluator_module.compute_map = clock.wrap("val COCO mAP", saved[2])
    try:
        yield
    finally:
        (
            predict_module.network_input,
            evaluator_module.detect_batch,
            evaluator_module.compute_map,
        ) = saved


def data_pipeline(dataset: DetectionDataset, samples: int, batch: int) -> dict[str, float]:
    """Mean seconds per image of each stage of the training sample, in this process: decode
    (unless the dataset holds it decoded), each transform of the training ``v2.Compose``, and
    ``collate`` per image."""
    times: dict[str, list[float]] = defaultdict(list)
    transform = dataset.transform
    steps = list(getattr(transform, "transforms", [transform]))
    torch.manual_seed(0)
    out = []
    n = min(samples, len(dataset))
    for i in range(n):
        t0 = time.perf_counter()
        array = dataset.load_image(i)
        times["decode"].append(time.perf_counter() - t0)
        r = dataset.records[i]
        image, target = to_v2(array, r.boxes.copy(), r.classes.copy())
        for step in steps:
            t0 = time.perf_counter()
            image, target = step(image, target)
            times[type(step).__name__].append(time.perf_counter() - t0)
        out.append((*from_v2(image, target), i))
    t0 = time.perf_counter()
    for k in range(0, len(out), batch):
        collate(out[k : k + batch])
    times["collate"].append((time.perf_counter() - t0) / max(1, len(out)))
    return {k: statistics.fmean(v) for k, v in times.items()}


def table(rows: list[tuple[str, float, float]], epoch_s: float) -> str:
    lines = [
        "| part | per step (ms) | per epoch (s) | share |",
        "|---|---:|---:|---:|",
    ]
    for name, step_ms, per_epoch in rows:
        step = f"{step_ms:.1f}" if step_ms == step_ms else ""
        lines.append(f"| {name} | {step} | {per_epoch:.1f} | {100 * per_epoch / epoch_s:.1f} % |")
    lines.append(f"| **epoch** | | **{epoch_s:.1f}** | 100 % |")
    return "\n".join(lines)


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        raise SystemExit("usage: python bench/train_profile.py [options] -- EDGEYOLO-TRAIN-OPTIONS")
    cut = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs-run", type=int, default=1, help="epochs to profile (default 1)")
    p.add_argument("--max-steps", type=int, default=None, help="steps per profiled epoch")
    p.add_argument(
        "--skip-steps",
        type=int,
        default=0,
        help="leave the first N steps out of the means (first-call costs; default 0: an epoch's "
        "real cost includes its loader start)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="channels-last weights and inputs on any device (the trainer does it on CUDA)",
    )
    p.add_argument("--data-samples", type=int, default=64, help="samples timed in-process")
    p.add_argument("--no-validation", action="store_true", help="skip the timed validation")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    a = p.parse_args(argv[:cut])
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = parse_train_options(argv[cut + 1 :])
    clock = Clock()
    t0 = time.perf_counter()
    trainer = Trainer(cfg, progress=False)
    setup_s = time.perf_counter() - t0
    trainer.hooks = [h for h in trainer.hooks if type(h).__name__ != "ProgressBar"]
    if a.channels_last:
        channels_last(trainer)
    instrument(trainer, clock, a.max_steps)
    for h in trainer.hooks:
        h.before_train(trainer)
    epoch_walls = []
    with validation_parts(clock):
        for epoch in range(a.epochs_run):
            trainer.epoch = epoch
            t_epoch = time.perf_counter()
            for h in trainer.hooks:
                h.before_epoch(trainer)
            sums, n_img, dt_steps = trainer._run_epoch(epoch)
            result = trainer._finish_epoch(epoch, sums, n_img, dt_steps)
            trainer.last_epoch = result
            for h in trainer.hooks:
                h.after_epoch(trainer, result)
            epoch_walls.append(time.perf_counter() - t_epoch)
            print(trainer._epoch_line(result), flush=True)
        if not a.no_validation and not clock.times.get("validation"):
            trainer.evaluate()
            # as an evaluated epoch writes it (the Checkpointer's best.pt)
            trainer.save("best.pt", resumable=False)

    steps_per_epoch = trainer.steps_per_epoch
    for name in (*STEP_PARTS[:-1], "step"):
        del clock.times[name][: a.skip_steps]
    n_steps = len(clock.times["step"])
    per_step = {}
    for name in STEP_PARTS[:-1]:
        per_step[name] = clock.total(name) / max(1, n_steps)
    step_total = (clock.total("step") + clock.total("data wait")) / max(1, n_steps)
    per_step["other"] = step_total - sum(per_step.values())
    interval = max(1, cfg.eval_interval)
    n_val = max(1, len(clock.times.get("validation", [])))
    val_s = clock.total("validation") / n_val
    val_parts = {
        "val read+letterbox": clock.total("val read+letterbox") / n_val,
        "val forward": clock.total("val forward") / n_val,
        "val decode+NMS": (clock.total("val forward+NMS") - clock.total("val forward")) / n_val,
        "val COCO mAP": clock.total("val COCO mAP") / n_val,
    }
    val_parts["val other"] = val_s - sum(val_parts.values())
    last_s = statistics.fmean(clock.times.get("checkpoint last.pt", [0.0]))
    best_s = statistics.fmean(clock.times.get("checkpoint best.pt", [0.0]))
    rows: list[tuple[str, float, float]] = [
        (name, 1000 * per_step[name], per_step[name] * steps_per_epoch) for name in STEP_PARTS
    ]
    rows += [(f"{name} (1 in {interval} epochs)", float("nan"), v / interval)
             for name, v in val_parts.items()]  # fmt: skip
    rows += [
        ("checkpoint last.pt", float("nan"), last_s),
        (f"checkpoint best.pt (1 in {interval} epochs)", float("nan"), best_s / interval),
    ]
    epoch_s = sum(r[2] for r in rows)
    pipeline = data_pipeline(trainer.dataset, a.data_samples, trainer.rank_batch)
    env = environment()
    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "argv": argv[cut + 1 :],
        "threads": torch.get_num_threads(),
        "machine": env["machine"],
        "versions": {k: v for k, v in env["versions"].items() if v},
        "setup_s": setup_s,
        "steps_measured": n_steps,
        "steps_per_epoch": steps_per_epoch,
        "batch": trainer.rank_batch,
        "per_step_s": per_step,
        "step_s": step_total,
        "train_images_per_s": trainer.rank_batch / step_total,
        "validation_s": val_s,
        "validation_parts_s": val_parts,
        "validations_measured": len(clock.times.get("validation", [])),
        "checkpoint_last_s": last_s,
        "checkpoint_best_s": best_s,
        "epoch_walls_s": epoch_walls,
        "epoch_s": epoch_s,
        "data_pipeline_s_per_image": pipeline,
        "table": table(rows, epoch_s),
    }
    print(record["table"])
    print(
        f"set-up {setup_s:.1f} s; {n_steps} steps measured ({steps_per_epoch} per epoch), "
        f"{record['train_images_per_s']:.2f} train img/s; validation {val_s:.1f} s"
    )
    print(
        "data pipeline, ms per image (in this process): "
        + ", ".join(f"{k} {1000 * v:.2f}" for k, v in pipeline.items())
    )
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
