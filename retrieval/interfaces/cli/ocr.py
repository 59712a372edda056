"""Text recognition: ``retrieval ocr`` reads the text in a collection's images (incrementally)
or, given image files, prints the lines of text in each without any collection."""

from __future__ import annotations

from pathlib import Path

import click

from .group import cli, json_option, open_collection, progress_option
from .output import counted, echo_json, progress_bars


@cli.command("ocr")
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Read every image again, even up-to-date ones.")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Images read and committed together.")
@json_option("Print the summary (with IMAGE: each file's lines, boxes and scores) as JSON.")
@progress_option
@click.pass_context
def ocr(ctx: click.Context, images: tuple[Path, ...], force: bool, batch_size: int,
        as_json: bool, progress: bool | None) -> None:
    """Read the text in every image of the collection (OCR: PP-OCR models for Chinese and
    English, needs the ocr extra: pip install 'retrieval[ocr]'). It is stored as the image's
    recognised text, found by keyword search (--keywords, --hybrid), --where 'ocr ~ *word*'
    and text searches (--target text). Only images not read yet, or whose file or OCR model
    changed, are read; an interrupted run continues where it stopped.

    With IMAGE files: print the lines of text in each, without a collection."""
    if images:
        _read_files(images, as_json)
        return
    col = open_collection(ctx)
    with progress_bars(progress, unit="image") as bar:
        summary = col.ocr(force=force, batch_size=batch_size, progress=bar)
    if as_json:
        echo_json(summary.to_dict())
        return
    for e in summary.errors[:20]:
        click.echo(f"  skipped {e.path}: {e.reason}", err=True)
    if len(summary.errors) > 20:
        click.echo(f"  ... and {len(summary.errors) - 20} more (see --json)", err=True)
    rate = f" ({summary.read / summary.seconds:.1f} images/s)" if summary.seconds else ""
    click.echo(f"{counted(summary.read, 'image')} read ({summary.recognised} with text){rate}, "
               f"{summary.unchanged} up to date, {summary.failed} failed")


def _read_files(images: tuple[Path, ...], as_json: bool) -> None:
    """Each file's lines (one JSON object per file with --json); an unreadable file is one
    ``Error:`` line (the only line, and exit status 1, when it is the only file)."""
    from ...enrich.ocr import joined, recognise_file, set_threads
    from ...enrich.recognition import failure
    from ...errors import InputError, OCRUnavailableError
    from ...pathnames import shown

    set_threads(None)
    failed = 0
    for image in images:
        try:
            lines = recognise_file(image)
        except OCRUnavailableError:
            raise
        except Exception as exc:
            if len(images) == 1:
                raise InputError(f"{shown(str(image))}: {failure(exc)}") from None
            click.echo(f"Error: {shown(str(image))}: {failure(exc)}", err=True)
            failed += 1
            continue
        if as_json:
            echo_json({"path": shown(str(image)), "text": joined(lines),
                       "lines": [line.to_dict() for line in lines]})
        elif len(images) == 1:
            for line in lines:
                click.echo(line.text)
        else:
            click.echo(f"{shown(str(image))}:")
            for line in lines:
                click.echo(f"  {line.text}")
        if not lines and not as_json:
            click.echo(f"no text found in {shown(str(image))}", err=True)
    if failed:
        raise click.exceptions.Exit(1)
