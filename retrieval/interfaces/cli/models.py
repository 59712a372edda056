"""Commands about models: train, the offline demo, and ONNX exports."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ...pathnames import shown
from .describing import demo_caption, show_demo_captions
from .group import cli, json_option, open_collection, progress_option
from .output import TrainProgress, counted, describe_export, echo_json_lines, progress_bars

if TYPE_CHECKING:
    from ...search import Hit
    from ...training import TrainResult


@cli.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Output folder: the trained model (local-dir layout) and checkpoints.")
@click.option("--model", default=None,
              help="Model to fine-tune (default ViT-B-32), or with --from-scratch an "
                   "open_clip architecture or a model config JSON file.")
@click.option("--pretrained", default=None,
              help="Weights to start from (default laion2b_s34b_b79k for ViT-B-32).")
@click.option("--from-scratch", is_flag=True, help="Start from random weights.")
@click.option("--lock-image", is_flag=True, help="Freeze the image tower (locked-image tuning).")
@click.option("--lock-text", is_flag=True, help="Freeze the text tower.")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Peak learning rate. Default: chosen for the model by a short learning-rate "
                   "range test on the first batches.")
@click.option("--no-early-stop", is_flag=True,
              help="Train all --epochs even when held-out recall stops improving.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.1, show_default=True)
@click.option("--warmup-steps", type=click.IntRange(min=0), default=None,
              help="Linear warm-up steps (default 5% of all steps).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, help="Share of images held out for validation.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Decode processes for the one-time image decoding.")
@click.option("--device", default="auto", show_default=True)
@click.option("--half-weights", is_flag=True, help="Write the final weights as float16.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@json_option("Print per-epoch metrics as JSON.")
@progress_option
def train(data: Path, out: Path, model: str | None, pretrained: str | None, from_scratch: bool,
          lock_image: bool, lock_text: bool, epochs: int, batch_size: int, lr: float | None,
          weight_decay: float, warmup_steps: int | None, val_fraction: float, seed: int,
          workers: int | None, device: str, half_weights: bool, resume: bool, as_json: bool,
          progress: bool | None, no_early_stop: bool) -> None:
    """Train or fine-tune a model on captioned images in DATA: a folder of images with
    sidecar captions (x.jpg + x.txt, one caption per line), or a CSV/JSONL file of image
    paths and captions. The result loads with --model local-dir:OUT."""
    from ...encoders.spec import TRAIN_MODEL
    from ...training import TrainConfig
    from ...training import train as run_train

    if model is None:
        model = TRAIN_MODEL.name
        pretrained = pretrained or (None if from_scratch else TRAIN_MODEL.pretrained)
    cfg = TrainConfig(
        data=str(data), out=str(out), model=model, pretrained=pretrained,
        from_scratch=from_scratch, lock_image=lock_image, lock_text=lock_text, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
        seed=seed, val_fraction=val_fraction, workers=workers, device=device,
        half_weights=half_weights, early_stop=not no_early_stop)
    bar = TrainProgress(sys.stderr.isatty() if progress is None else progress, as_json)
    try:
        result = run_train(cfg, resume=resume, progress=bar)
    finally:
        bar.close()
    for e in result.skipped[:20]:
        click.echo(f"  skipped {shown(e.path)}: {e.reason}", err=True)
    if len(result.skipped) > 20:
        click.echo(f"  ... and {len(result.skipped) - 20} more skipped", err=True)
    if as_json:
        click.echo(json.dumps({"model": result.model, "train_images": result.train_images,
                               "val_images": result.val_images, "epochs": result.epochs,
                               "lr": result.lr, "before": result.baseline,
                               "best_epoch": result.best_epoch,
                               "stopped_early": result.stopped_early,
                               "improved": result.improved,
                               "skipped": [e.__dict__ for e in result.skipped]}))
    else:
        _print_training(result)
    _warn_held_out(result.val_images)
    if result.improved is False and not result.too_few_held_out:
        click.echo("Warning: training did not improve held-out recall; the model written is "
                   "no better than the one it started from (try more data, more --epochs or "
                   "another --lr)", err=True)


def _print_training(result: TrainResult) -> None:
    total = result.train_images + result.val_images
    click.echo(f"model written to {result.out}; use it with --model {result.model}")
    click.echo(f"trained on {counted(result.train_images, 'image')}; held out "
               f"{result.val_images} of {total} to measure it")
    if result.before is not None and result.after is not None:
        stop = ", stopped early" if result.stopped_early else ""
        click.echo(f"held-out recall (mean of recall@1/5/10, both ways): {result.before:.3f} "
                   f"before training, {result.after:.3f} after (epoch {result.best_epoch}"
                   f"{stop}; learning rate {result.lr:.2e})")


def _warn_held_out(n: int) -> None:
    """Held-out recall on a handful of images says nothing (see MIN_HELD_OUT)."""
    from ...training.tuning import MIN_HELD_OUT, chance_recall

    if n == 0:
        click.echo("Warning: no images were held out (--val-fraction 0), so nothing measured "
                   "whether training helped", err=True)
    elif n < MIN_HELD_OUT:
        are = "is" if n == 1 else "are"
        click.echo(f"Warning: {counted(n, 'held-out image')} {are} too few to judge the model "
                   f"(a random ranking would score {chance_recall(n):.2f} on them; "
                   f"{MIN_HELD_OUT} or more are needed): add images or raise --val-fraction",
                   err=True)


@cli.command()
@click.option("--images", "n", type=click.IntRange(10, 100_000), default=300, show_default=True,
              help="How many demo images to generate.")
@click.option("--folder", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where to write them (default: demo/images under $RETRIEVAL_HOME).")
@progress_option
@click.pass_context
def demo(ctx: click.Context, n: int, folder: Path | None, progress: bool | None) -> None:
    """Try it offline: generate synthetic images of coloured shapes, index them with the
    built-in demo model, and run text, image and image-to-text searches."""
    from ...config import home
    from ...encoders.spec import DEFAULT_MODEL
    from ...training.demo import DEMO_QUERIES, prepare_demo

    base = home() / "demo"
    folder = folder or base / "images"
    col_path = ctx.obj["collection"] or base / "collection"
    click.echo(f"Generating {n} demo images (coloured shapes with captions) in {folder}")
    with progress_bars(progress) as bar:
        col, summary = prepare_demo(folder, col_path, n=n, progress=bar)
    click.echo(f"Indexed them into {col_path} with the demo model: {summary.added} added, "
               f"{summary.unchanged} unchanged, {summary.embedded} embedded.\n")

    def show(title: str, hits: list[Hit]) -> None:
        click.echo(title)
        for rank, h in enumerate(hits, 1):
            name = Path(h.path).name if h.path else ""
            what = f"{name:<22} {h.text}" if h.kind == "image" else repr(h.text)
            click.echo(f"  {rank}. {h.score:.3f}  {what}")
        click.echo()

    for query in DEMO_QUERIES:
        show(f'Text search: "{query}" (file, its caption)', col.search(query, k=5))
    sample = sorted(folder.glob("*.png"))[0]
    caption = demo_caption(sample)
    show(f"Image search: {sample.name} ({caption})", col.search(image=sample, k=5))
    show(f"Image to text: best descriptions of {sample.name}", col.caption(sample, k=3))
    show_demo_captions(sorted(folder.glob("*.png"))[:3])
    click.echo("Try next:")
    prefix = f"retrieval --collection {col_path}"
    click.echo(f'  {prefix} search "a large orange star"')
    click.echo(f'  {prefix} search "左下角有一个橙色的星形"      # Chinese works too')
    click.echo(f"  {prefix} caption {sample}")
    click.echo(f"  {prefix} generate-captions       # a caption for every image")
    click.echo(f"  retrieval caption {sample} --generate --captioner demo-captioner")
    click.echo("  retrieval index ~/Pictures        # your photos, with the default model "
               f"{DEFAULT_MODEL.name} (downloaded once)")
    click.echo("  retrieval --help")


@cli.group()
def model() -> None:
    """The collection's model: export it to ONNX, list exports."""


@model.command("export")
@click.option("--int8", is_flag=True, help="Also make the int8 variant (dynamic quantisation).")
@click.option("--force", is_flag=True, help="Export again even if an export exists (repairs a "
              "damaged one) or failed before.")
@json_option("Print the export's manifest as JSON.")
@progress_option
@click.pass_context
def model_export(ctx: click.Context, int8: bool, force: bool, as_json: bool,
                 progress: bool | None) -> None:
    """Export the collection's model to ONNX (both towers, parity-checked against torch), so
    that searches never load torch. Index runs do this by themselves; this is for collections
    made before, or to add the int8 variant. An existing export is checked file by file
    against its checksums, and exported again if damaged."""
    col = open_collection(ctx)
    with progress_bars(progress) as bar:
        export = col.export_model(int8=int8, force=force, progress=bar)
    if as_json:
        click.echo(json.dumps({"folder": str(export.folder), **export.manifest}))
    elif export.ok:
        click.echo(describe_export(export))
    else:
        raise click.ClickException(f"{col.spec} cannot be exported, so it stays on torch: "
                                   f"{export.reason}")


@model.command("list")
@click.option("--available", is_flag=True,
              help="The model guide instead: the models measured for this project, their cost "
                   "here, their published accuracy and their weights' licence.")
@json_option("One JSON object per export (with --available: per model of the guide).")
def model_list(available: bool, as_json: bool) -> None:
    """The exported models on this machine (in $RETRIEVAL_EXPORTS); with --available, the
    model guide."""
    if available:
        from ...encoders import guide

        if as_json:
            echo_json_lines(guide.rows())
        else:
            for line in guide.table_lines():
                click.echo(line)
        return
    from ...encoders.export_store import ExportStore

    store = ExportStore()
    exports = store.all()
    for export in exports:
        if as_json:
            click.echo(json.dumps({"folder": str(export.folder), **export.manifest}))
        else:
            click.echo(describe_export(export))
    if not as_json:
        click.echo(f"{counted(len(exports), 'export')} in {store.root}", err=True)
