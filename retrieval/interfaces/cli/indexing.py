"""Commands that add to a collection: index, add-texts, remove, tag."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ...pathnames import shown
from .group import cli, json_option, model_options, open_collection, progress_option
from .output import counted, json_text, print_summary, progress_bars
from .watching import options_of, watch_here, watch_options

if TYPE_CHECKING:
    from ...ingest import IndexSummary


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@model_options
@click.option("--hidden", is_flag=True, help="Also index hidden files and folders.")
@click.option("--strict", is_flag=True, help="Exit with an error if any file was skipped.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None,
              help="Refuse images with more pixels than this (default 100 million).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Decode processes (0: decode in the main process). Default: one per CPU, "
                   "up to 8; they run at low priority.")
@click.option("--no-captions", is_flag=True, help="Ignore sidecar caption files (x.txt).")
@click.option("--ocr/--no-ocr", default=None,
              help="Read the text in images (OCR, Chinese and English; needs the ocr extra: "
                   "pip install 'retrieval[ocr]') for keyword search and --where 'ocr ~ ...'. "
                   "Remembered for later runs. Default: as the collection's last --ocr/--no-ocr, "
                   "else off.")
@click.option("--videos/--no-videos", default=True, show_default=True,
              help="Index videos too (mp4, mov, m4v, mkv, webm, avi): each is cut into shots "
                   "with a keyframe each, searchable with --target video.")
@click.option("--index-memory", default=None, metavar="SIZE",
              help="Memory budget of the vector indexes, e.g. 2G (default 4G; remembered). "
                   "It decides between exact, IVF and compressed IVF indexes.")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default=None,
              help="Embed with the model's int8 ONNX variant (faster on CPU, vectors within "
                   "about 0.999 cosine). Chosen when a collection is created. Default: fp32.")
@click.option("--ray", "ray", is_flag=False, flag_value="auto", default=None,
              metavar="[ADDRESS]",
              help="Decode and embed on a Ray cluster: at ADDRESS, or without one the cluster "
                   "of RAY_ADDRESS or this machine (else a new local one). Put it after the "
                   "paths, or write --ray=ADDRESS. Needs the ray extra.")
@click.option("--watch", is_flag=True,
              help="Keep running after the pass and index changes as they happen: new, "
                   "changed, moved and deleted files (SIGTERM or Ctrl-C stops).")
@watch_options
@json_option("Print the summary as one JSON object (with --watch: one line per event).")
@progress_option
@click.pass_context
def index(ctx: click.Context, paths: tuple[Path, ...], model: str | None,
          pretrained: str | None, device: str, hidden: bool, strict: bool,
          max_pixels: int | None, batch_size: int, workers: int | None, no_captions: bool,
          index_memory: str | None, precision: str | None, ray: str | None, ocr: bool | None,
          videos: bool, watch: bool, poll: bool, settle: float, as_json: bool,
          progress: bool | None) -> None:
    """Index image and video files and folders (recursively). Unchanged files are skipped;
    changed ones are re-embedded; files gone from these folders are removed.

    A caption file beside an image (photo.txt for photo.jpg) is stored as its caption. A video
    is cut into shots (a long shot into parts of a few seconds), each a search result with
    its time span. With --watch the folders stay indexed: changes are indexed in batches once
    files stop changing (a file being written waits until it is complete)."""
    ctx.meta["json"] = as_json
    if watch and strict:
        raise click.UsageError("--strict ends a run on skipped files; it does not go with "
                               "--watch")
    col = open_collection(ctx, model, pretrained, device, create=True, precision=precision)
    args: dict[str, Any] = dict(
        hidden=hidden, max_pixels=max_pixels, batch_size=batch_size, workers=workers,
        captions=not no_captions, index_memory=index_memory, ray=ray, ocr=ocr, videos=videos)
    with progress_bars(progress) as bar:
        if watch:
            watch_here(col, paths, args, options_of(poll, settle), as_json, bar)
            return
        summary = col.index(paths, strict=strict, progress=bar, **args)
    print_summary(summary, as_json)
    if not as_json:
        print_ocr(summary)


def print_ocr(summary: IndexSummary) -> None:
    """What an index run with --ocr read: images with text, and files whose text could not be
    read (indexed all the same; read again next run), one line each."""
    if summary.recognised:
        click.echo(f"text read in {counted(summary.recognised, 'image')}")
    for e in summary.warnings[:20]:
        click.echo(f"  no text read from {shown(e.path)}: {e.reason}", err=True)
    if len(summary.warnings) > 20:
        click.echo(f"  ... and {len(summary.warnings) - 20} more (see --json)", err=True)
    for e in summary.partial[:20]:
        click.echo(f"  only part of {shown(e.path)} indexed: {e.reason}", err=True)


@cli.command("add-texts")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@model_options
@json_option("Print the summary as one JSON object.")
@progress_option
@click.pass_context
def add_texts(ctx: click.Context, file: Path, model: str | None, pretrained: str | None,
              device: str, as_json: bool, progress: bool | None) -> None:
    """Add texts from FILE: one text per line, or JSONL objects with "text", an optional "id"
    (a text with a known id is replaced) and any other fields as metadata."""
    col = open_collection(ctx, model, pretrained, device, create=True)
    with progress_bars(progress, unit="text") as bar:
        summary = col.add_texts(file, progress=bar)
    print_summary(summary, as_json, what="texts")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_option("Print {\"removed\": N}.")
@click.pass_context
def remove(ctx: click.Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Remove images (and their captions) at these paths or under these folders from the
    collection. Files on disk are not touched."""
    n = open_collection(ctx).remove(paths)
    click.echo(json_text({"removed": n}) if as_json else f"{n} removed")


@cli.command()
@click.option("--labels", "labels_file", required=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="Label vocabulary: one label per line.")
@click.option("--template", "templates", multiple=True,
              help="Prompt template with {} for the label (repeatable; default: 'a photo of "
                   "a {}.' and two variants).")
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True,
              help="At most this many tags per image.")
@click.option("--min-score", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Smallest probability a tag needs.")
@json_option("Print the result as one JSON object.")
@progress_option
@click.pass_context
def tag(ctx: click.Context, labels_file: Path, templates: tuple[str, ...], top: int,
        min_score: float, as_json: bool, progress: bool | None) -> None:
    """Zero-shot tagging of every image against a label vocabulary. Tags are stored with
    their scores; use them in --tag / --where 'tag = X' filters and hybrid search. Images
    already tagged with the same labels and settings are skipped."""
    from ...errors import InputError

    try:
        labels = labels_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{labels_file}: cannot read labels ({exc})") from None
    col = open_collection(ctx, one_shot=True)
    with progress_bars(progress, unit="image") as bar:
        result = col.tag(labels, templates=templates or None, top=top, min_score=min_score,
                         progress=bar)
    click.echo(json_text(result) if as_json else
               f"{counted(result['tagged'], 'image')} tagged, {result['unchanged']} unchanged, "
               f"{counted(result['labels'], 'label')}")
