"""Train or fine-tune an open_clip model on captioned images; write it as a ``local-dir`` model.

The symmetric contrastive loss from open_clip (sigmoid loss for SigLIP models), over batches of
images from the decoded cache with one of each image's captions drawn per epoch. Each epoch
writes a resumable checkpoint and the current weights in open_clip's ``local-dir`` layout, so
``--model local-dir:OUT`` works at once; a resumed run continues exactly as an uninterrupted
one would (every epoch draws its own seeded shuffle).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..encoders.spec import TRAIN_MODEL
from ..errors import TrainingError, first_line
from ..ingest.report import FileError
from ..media import DEFAULT_MAX_PIXELS
from .checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from .data import decode_cache, fingerprint, read_pairs, split
from .model import (
    build_model,
    evaluate,
    halve_weights,
    image_spec,
    lr_at,
    param_groups,
    save_weights,
    write_config,
)
from .objectives import Objective, caption_vocabulary
from .tuning import (
    MIN_GAIN,
    MIN_HELD_OUT,
    RANGE_STEPS,
    best_epoch,
    range_test,
    recall_score,
    should_stop,
)


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in checkpoints, checked on resume)."""

    data: str
    out: str
    model: str = TRAIN_MODEL.name
    pretrained: str | None = TRAIN_MODEL.pretrained
    from_scratch: bool = False  # model is an open_clip architecture name or a config JSON file
    lock_image: bool = False
    lock_text: bool = False
    epochs: int = 5
    batch_size: int = 64
    lr: float | None = None  # default: a learning-rate range test (training.tuning)
    weight_decay: float = 0.1
    warmup_steps: int | None = None  # default: 5% of all steps
    seed: int = 0
    val_fraction: float = 0.1
    workers: int | None = None
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    keep_checkpoints: int = 1
    half_weights: bool = False  # write the final weights as float16 (half the size)
    # "data": CoCa's caption softmax over the training captions' tokens only (from scratch;
    # see retrieval.training.objectives)
    caption_vocab: str | None = None
    early_stop: bool = True  # stop when held-out recall stops improving



@dataclass(frozen=True)
class TrainProgress:
    """A progress report: phase is decode, lr (the range test, ``lr`` chosen at its end),
    train or eval (``metrics``; epoch 0 is the model before training)."""

    phase: str
    epoch: int
    epochs: int
    step: int = 0
    steps: int = 0
    loss: float | None = None
    lr: float | None = None
    metrics: dict[str, float] | None = None


@dataclass
class TrainResult:
    """What a run produced: the model folder, its spec, and per-epoch metrics."""

    out: Path
    model: str
    epochs: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[FileError] = field(default_factory=list)
    train_images: int = 0
    val_images: int = 0
    lr: float | None = None  # the peak learning rate used (chosen by the range test if not given)
    baseline: dict[str, float] = field(default_factory=dict)  # held-out recall before training
    best_epoch: int | None = None  # the epoch whose weights the model folder holds
    stopped_early: bool = False

    @property
    def before(self) -> float | None:
        """Held-out recall (mean of recall@1/5/10 both ways) before training."""
        return recall_score(self.baseline)

    @property
    def after(self) -> float | None:
        """Held-out recall of the weights written (the best epoch)."""
        best = next((e for e in self.epochs if e["epoch"] == self.best_epoch), None)
        return recall_score(best)

    @property
    def too_few_held_out(self) -> bool:
        """Whether the held-out images are too few for recall to judge the model (see
        :data:`~retrieval.training.tuning.MIN_HELD_OUT`)."""
        return self.val_images < MIN_HELD_OUT

    @property
    def improved(self) -> bool | None:
        """Whether training beat the starting model on held-out recall (None: no held-out
        set)."""
        if self.before is None or self.after is None:
            return None
        return self.after >= self.before + MIN_GAIN


def train(cfg: TrainConfig, *, resume: bool = False,
          progress: Callable[[TrainProgress], None] | None = None) -> TrainResult:
    """Run (or resume) training; returns where the model is and what it measured."""
    run = _Run(cfg, resume, progress or (lambda _p: None))
    for epoch in range(run.start_epoch, cfg.epochs):
        if cfg.early_stop and should_stop(run.result.epochs):
            run.result.stopped_early = True
            break
        run.epoch(epoch)
    run.finish()
    return run.result


class _Run:
    """One training run: data and model prepared, optimiser (restored when resuming)."""

    def __init__(self, cfg: TrainConfig, resume: bool,
                 report: Callable[[TrainProgress], None]) -> None:
        import torch

        from ..encoders.openclip import resolve_device

        self.cfg, self.report = cfg, report
        self.out = Path(cfg.out).expanduser().absolute()
        cfg.out = str(self.out)
        if cfg.epochs < 1 or cfg.batch_size < 2:
            raise TrainingError("epochs must be >= 1 and batch size >= 2")
        ckpt = _latest_checkpoint(self.out)
        if resume and ckpt is None:
            raise TrainingError(
                f"nothing to resume: no checkpoint under {self.out / 'checkpoints'}")
        if not resume and ckpt is not None:
            raise TrainingError(f"{self.out} already holds a training run; pass --resume to "
                                "continue it or choose another --out")
        self.device = resolve_device(cfg.device)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self._prepare_data_and_model()
        self._prepare_optimiser()
        self.start_epoch = self.step = 0
        if resume and ckpt is not None:
            self._resume(ckpt)
        else:
            self.result.baseline = self._evaluate()
            self.report(TrainProgress("eval", 0, cfg.epochs, metrics=self.result.baseline))
            self.lr = cfg.lr if cfg.lr is not None else self._find_lr()
        self.result.lr = self.lr

    def _prepare_data_and_model(self) -> None:
        cfg = self.cfg
        self.pairs, skipped = read_pairs(cfg.data)
        train_paths, val_paths = split(list(self.pairs), cfg.val_fraction, cfg.seed,
                                       cfg.batch_size)
        self.model, self.tokenizer, self.model_cfg = build_model(cfg, self.device)
        self.spec = image_spec(self.model)
        import open_clip

        self.preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(self.model))
        self.report(TrainProgress("decode", 0, cfg.epochs, 0, len(self.pairs)))
        all_paths = train_paths + val_paths
        self.pixels, self.kept, bad = decode_cache(
            all_paths, self.spec, self.out / "cache", cfg.workers, cfg.max_pixels,
            lambda n: self.report(TrainProgress("decode", 0, cfg.epochs, n, len(all_paths))))
        row = {p: i for i, p in enumerate(self.kept)}
        self.train_rows = [row[p] for p in train_paths if p in row]
        self.val_rows = [row[p] for p in val_paths if p in row]
        if len(self.train_rows) < 2:
            raise TrainingError("too little data: fewer than 2 readable training images")
        self.data_key = fingerprint([train_paths, val_paths])
        self.result = TrainResult(self.out, f"local-dir:{self.out}", skipped=skipped + bad,
                                  train_images=len(self.train_rows),
                                  val_images=len(self.val_rows))

    def _prepare_optimiser(self) -> None:
        import torch

        cfg, model = self.cfg, self.model
        if cfg.lock_image and cfg.lock_text:
            raise TrainingError("both towers are locked: nothing would be trained")
        if cfg.lock_image:
            model.lock_image_tower(unlocked_groups=0)
        if cfg.lock_text:
            model.lock_text_tower(unlocked_layers=0)
        vocab = None
        if cfg.caption_vocab == "data":
            if not cfg.from_scratch:
                raise TrainingError("a caption vocabulary from the data is for training from "
                                    "scratch only")
            vocab = caption_vocabulary(self.tokenizer, [c for r in self.train_rows + self.val_rows
                                                        for c in self.captions(r)])
        self.objective = Objective(model, vocab)
        self.lr = cfg.lr or 0.0
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay),
                                           lr=self.lr, betas=(0.9, 0.98), eps=1e-6)
        self.batch = min(cfg.batch_size, len(self.train_rows))
        self.steps_per_epoch = len(self.train_rows) // self.batch
        self.total = self.steps_per_epoch * cfg.epochs
        self.warmup = cfg.warmup_steps if cfg.warmup_steps is not None \
            else max(1, self.total // 20)

    def _resume(self, path: Path) -> None:
        state = load_checkpoint(path, self.device)
        saved = state["config"]
        for k in ("model", "pretrained", "from_scratch", "batch_size", "epochs", "seed"):
            if saved.get(k) != getattr(self.cfg, k):
                raise TrainingError(f"cannot resume: {k} was {saved.get(k)!r} in the "
                                    f"checkpoint, {getattr(self.cfg, k)!r} now")
        if state["data_key"] != self.data_key:
            raise TrainingError("cannot resume: the training data changed since the checkpoint")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainingError(f"cannot resume from {path}: it does not fit this model "
                                f"({first_line(exc)})") from None
        self.start_epoch, self.step = state["epoch"], state["step"]
        self.result.epochs = state["history"]
        self.lr, self.result.baseline = state["lr"], state["baseline"]
        restore_rng(state.get("rng") or {"torch": state["torch_rng"]})

    def epoch(self, epoch: int) -> None:
        cfg = self.cfg
        # One generator per epoch: a resumed run shuffles and samples captions exactly as an
        # uninterrupted one would.
        rng = np.random.default_rng([cfg.seed, epoch])
        order = np.asarray(self.train_rows)[rng.permutation(len(self.train_rows))]
        t0 = time.perf_counter()
        self.model.train()
        losses = [self._step(epoch, b, order, rng) for b in range(self.steps_per_epoch)]
        metrics = self._evaluate()
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None,
                  "seconds": round(time.perf_counter() - t0, 1), **metrics}
        self.result.epochs.append(record)
        self.report(TrainProgress("eval", epoch + 1, cfg.epochs, self.steps_per_epoch,
                                  self.steps_per_epoch, record["loss"], None, metrics))
        self._save(epoch + 1)

    def _step(self, epoch: int, b: int, order: np.ndarray, rng: np.random.Generator) -> float:
        lr = lr_at(self.step, self.total, self.warmup, self.lr)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        loss = self._update(order, b, rng)
        self.step += 1
        self.report(TrainProgress("train", epoch + 1, self.cfg.epochs, b + 1,
                                  self.steps_per_epoch, loss, lr))
        return loss

    def _update(self, order: np.ndarray, b: int, rng: np.random.Generator) -> float:
        """One optimiser step on batch ``b`` of ``order`` (a caption drawn per image)."""
        import torch

        from ..encoders.openclip import pixels_to_tensor

        rows = np.sort(order[b * self.batch:(b + 1) * self.batch])
        caps = [self.captions(r)[int(rng.integers(len(self.captions(r))))] for r in rows]
        images = pixels_to_tensor(np.asarray(self.pixels[rows]), self.spec, self.device)
        loss = self.objective(images, self.tokenizer(caps).to(self.device), caps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.objective.pin()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))
        return float(loss.item())

    def _find_lr(self) -> float:
        """The range test (:func:`.tuning.range_test`) on batches of a shuffle of its own."""
        rng = np.random.default_rng([self.cfg.seed, 1 << 20])
        order = np.asarray(self.train_rows)[rng.permutation(len(self.train_rows))]
        steps = self.steps_per_epoch

        def step(i: int) -> float:
            loss = self._update(order, i % steps, rng)
            self.report(TrainProgress("lr", 0, self.cfg.epochs, i + 1, RANGE_STEPS, loss,
                                      self.optimizer.param_groups[0]["lr"]))
            return loss

        lr, _ = range_test(self.model, self.optimizer, step)
        self.report(TrainProgress("lr", 0, self.cfg.epochs, RANGE_STEPS, RANGE_STEPS, lr=lr))
        return lr

    def captions(self, row: int) -> list[str]:
        return self.pairs[self.kept[row]]

    def _evaluate(self) -> dict[str, float]:
        if not self.val_rows:
            return {}
        return evaluate(self.model, self.tokenizer, self.pixels[self.val_rows],
                        [self.captions(r) for r in self.val_rows], self.spec, self.device)

    def _save(self, epoch: int) -> None:
        """The model folder is usable after every epoch and holds the best epoch so far (by
        held-out recall); the checkpoint (the latest epoch) makes the run resumable."""
        cfg = self.cfg
        self.objective.pin()
        if best_epoch(self.result.epochs) in (None, epoch):
            write_config(self.out, self.model_cfg, self.preprocess_cfg)
            save_weights(self.model, self.out, False)
        folder = self.out / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(folder / f"epoch_{epoch}.pt", {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "epoch": epoch, "step": self.step, "config": asdict(cfg),
            "data_key": self.data_key, "history": self.result.epochs, "rng": rng_state(),
            "lr": self.lr, "baseline": self.result.baseline})
        for old in _checkpoints(self.out)[:-max(1, cfg.keep_checkpoints)]:
            old.unlink()


    def finish(self) -> None:
        """Record what the run did; float16 weights when asked for (of the best epoch)."""
        result = self.result
        result.best_epoch = best_epoch(result.epochs) or (result.epochs[-1]["epoch"]
                                                          if result.epochs else None)
        if self.cfg.half_weights:
            halve_weights(self.out)
        (self.out / "metrics.json").write_text(json.dumps(
            {"epochs": result.epochs, "before": result.baseline, "lr": result.lr,
             "best_epoch": result.best_epoch, "stopped_early": result.stopped_early},
            indent=1))


def _checkpoints(out: Path) -> list[Path]:
    return sorted((out / "checkpoints").glob("epoch_*.pt"),
                  key=lambda p: int(p.stem.split("_")[1]))


def _latest_checkpoint(out: Path) -> Path | None:
    found = _checkpoints(out)
    return found[-1] if found else None
