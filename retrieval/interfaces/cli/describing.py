"""Generated captions: ``generate-captions`` (every image of a collection; ``describe`` is its
old name, kept hidden) and the options that ``caption --generate`` shares with it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .group import cli, json_option, open_collection, progress_option
from .output import counted, echo_json, progress_bars

if TYPE_CHECKING:
    from ...encoders.generation import GenerationOptions


def generation_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--captioner and open_clip's generation options (same names and defaults)."""
    options = [
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of top_p / top_k sampling."),
        click.option("--repetition-penalty", type=click.FloatRange(min=0, min_open=True),
                     default=1.0, show_default=True),
        click.option("--temperature", type=click.FloatRange(min=0, min_open=True),
                     default=1.0, show_default=True),
        click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True,
                     help="top_k: sample from the k most probable tokens."),
        click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=0.1,
                     show_default=True,
                     help="top_p: sample from the fewest tokens whose probability adds up "
                          "to this."),
        click.option("--num-beams", type=click.IntRange(min=1), default=6, show_default=True),
        click.option("--min-seq-len", type=click.IntRange(min=0), default=5, show_default=True,
                     help="Tokens (start of text included) before the caption may end."),
        click.option("--seq-len", type=click.IntRange(min=3), default=30, show_default=True,
                     help="Most tokens of a caption (start and end of text included)."),
        click.option("--generation-type", type=click.Choice(["beam_search", "top_p", "top_k"]),
                     default="beam_search", show_default=True),
        click.option("--captioner-pretrained", default=None,
                     help="Pretrained tag or checkpoint file of --captioner."),
        click.option("--captioner", default=None, metavar="MODEL",
                     help="A CoCa model: coca_ViT-B-32 (with --captioner-pretrained "
                          "mscoco_finetuned_laion2b_s13b_b90k), hf-hub:, local-dir:, or "
                          "demo-captioner. Default: the collection's model when it is a CoCa, "
                          "demo-captioner for the demo model."),
    ]
    for option in options:
        f = option(f)
    return f


GENERATION_KEYS = ("generation_type", "seq_len", "min_seq_len", "num_beams", "top_p", "top_k",
                   "temperature", "repetition_penalty", "seed")


def take_generation(kwargs: dict[str, Any]) -> tuple[str | None, str | None, GenerationOptions]:
    """(captioner, its pretrained tag, options), taken out of a command's keyword arguments."""
    from ...encoders.generation import GenerationOptions

    options = GenerationOptions(**{k: kwargs.pop(k) for k in GENERATION_KEYS})
    return kwargs.pop("captioner"), kwargs.pop("captioner_pretrained"), options


@cli.command("generate-captions")
@generation_options
@click.option("--batch-size", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Images captioned and committed together.")
@click.option("--force", is_flag=True, help="Caption every image again, even up-to-date ones.")
@click.option("--device", default="auto", show_default=True,
              help="cpu, cuda, cuda:N, or auto (CUDA when available).")
@json_option("Print the summary as one JSON object.")
@progress_option
@click.pass_context
def generate_captions(ctx: click.Context, batch_size: int, force: bool, device: str,
                      as_json: bool, progress: bool | None, **kwargs: Any) -> None:
    """Write a caption for every image of the collection with a CoCa model (generated
    captions). They are stored beside sidecar captions and texts, never over them, found by
    text searches (--target text), keyword search (--hybrid) and --where 'caption ~ *glob*'.
    Only images without a caption from this captioner and these options, or whose file
    changed, are captioned; an interrupted run continues where it stopped."""
    captioner, pretrained, options = take_generation(kwargs)
    col = open_collection(ctx)
    with progress_bars(progress) as bar:
        summary = col.generate_captions(captioner, pretrained=pretrained, options=options,
                                        batch_size=batch_size, force=force, device=device,
                                        progress=bar)
    if as_json:
        echo_json(summary.to_dict())
        return
    for e in summary.errors[:20]:
        click.echo(f"  skipped {e.path}: {e.reason}", err=True)
    rate = f" ({summary.generated / summary.seconds:.1f} images/s)" if summary.seconds else ""
    click.echo(f"{counted(summary.generated, 'caption')} generated with {summary.captioner}{rate}, "
               f"{summary.unchanged} up to date, {summary.failed} failed")


# The command's name before issue 22, for the scripts and habits that use it; not listed.
cli.add_command(copy.copy(generate_captions), "describe")
cli.commands["describe"].hidden = True


def show_demo_captions(images: list[Path]) -> None:
    """``retrieval demo``: what the shipped demo captioner writes for a few demo images."""
    from ...enrich.captions import DEMO_CAPTIONER, caption_images

    texts, _ = caption_images([str(p) for p in images], DEMO_CAPTIONER)
    click.echo(f"Generated captions ({DEMO_CAPTIONER}, a small CoCa; file, caption written, "
               "sidecar caption)")
    for path, text in zip(images, texts, strict=True):
        click.echo(f"  {path.name:<22} {text!r}\n  {'':<22} {demo_caption(path)!r}")
    click.echo()


def demo_caption(image: Path) -> str:
    """The sidecar caption beside a demo image, read under the indexing rule (a regular file
    in the image's folder, see :mod:`retrieval.ingest.confine`); "" when there is none."""
    from ...ingest.confine import FoundFileError, read_caption_beside

    try:
        return read_caption_beside(str(image)).strip()
    except FoundFileError as exc:
        return f"({exc.reason})"
