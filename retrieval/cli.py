"""The ``retrieval`` command: a thin click layer over :class:`retrieval.Collection`.

Commands parse options, call the library, and print. Library errors (one hierarchy) become a
one-line ``Error: ...`` on stderr and exit code 1; Ctrl-C exits with 130 after the library has
committed what it finished.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import click

from .config import ENV_COLLECTION
from .errors import IndexingError, RetrievalError

if TYPE_CHECKING:
    from .collection import Collection, Hit
    from .ingest import IndexProgress, IndexSummary


class _Group(click.Group):
    """Turns library errors and interrupts into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IndexingError as exc:
            if exc.summary is not None and ctx.meta.get("json"):
                click.echo(json.dumps(exc.summary.to_dict()))  # type: ignore[attr-defined]
            raise click.ClickException(str(exc)) from None
        except RetrievalError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted: finished batches are saved; run the same command again "
                       "to continue.", err=True)
            sys.exit(130)


def _setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log = logging.getLogger("retrieval")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    log.propagate = False


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--collection", "collection_path", type=click.Path(path_type=Path),
              envvar=ENV_COLLECTION, show_envvar=True,
              help="Collection folder. Default: the 'default' collection under $RETRIEVAL_HOME "
                   "or the user data folder.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="retrieval")
@click.pass_context
def cli(ctx: click.Context, collection_path: Path | None, verbose: int) -> None:
    """Index image folders and search them by text or image with open_clip and FAISS."""
    _setup_logging(verbose)
    ctx.obj = {"collection": collection_path}


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--device", default="auto", show_default=True,
                     help="cpu, cuda, cuda:N, or auto (CUDA when available).")(f)
    f = click.option("--pretrained", default=None,
                     help="Pretrained tag (e.g. laion2b_s34b_b79k) or a checkpoint file. "
                          "Ignored for hf-hub: and local-dir: models.")(f)
    f = click.option("--model", default=None,
                     help="open_clip model: an architecture (ViT-B-32), hf-hub:org/repo or "
                          "local-dir:/path. Default: the collection's model; ViT-B-32 with "
                          "laion2b_s34b_b79k for a new collection.")(f)
    return f


def _collection_path(ctx: click.Context) -> Path:
    from .config import default_collection_path

    return ctx.obj["collection"] or default_collection_path()


def _open(ctx: click.Context, model: str | None = None, pretrained: str | None = None,
          device: str = "auto", create: bool = False, precision: str | None = None,
          one_shot: bool = False) -> Collection:
    from .collection import CATALOG_FILE, Collection
    from .encoders import DEFAULT_MODEL
    from .errors import CollectionNotFoundError

    path = _collection_path(ctx)
    exists = (path / CATALOG_FILE).exists()
    if not exists and not create:
        raise CollectionNotFoundError(
            f"no collection at {path}; create it with `retrieval --collection {path} index "
            "FOLDER` or choose one with --collection / $RETRIEVAL_COLLECTION")
    return Collection(path, model=DEFAULT_MODEL if model is None and not exists else model,
                      pretrained=pretrained, device=device, precision=precision,
                      one_shot=one_shot)


class _Progress:
    """Draws the library's progress reports as tqdm bars on stderr."""

    LABELS: ClassVar[dict[str, str]] = {
        "scan": "scanning", "embed": "embedding", "captions": "captions", "remove": "removing",
        "tag": "tagging"}
    MESSAGES = frozenset({"index", "model"})  # phases that report lines, not counts

    def __init__(self, enabled: bool, unit: str = "file") -> None:
        self.enabled = enabled
        self.unit = unit
        self.bar: Any = None
        self.phase: str | None = None

    def __call__(self, p: IndexProgress) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if p.phase != self.phase:
            self.close()
            self.phase = p.phase
            if p.phase == "index":
                click.echo("updating search index...", err=True)
            elif p.phase not in self.MESSAGES:
                self.bar = tqdm(total=p.total, desc=self.LABELS.get(p.phase, p.phase),
                                unit=self.unit, file=sys.stderr, dynamic_ncols=True, leave=True)
        if p.detail:
            click.echo(p.detail, err=True)
        if self.bar is None:
            return
        if p.total is not None and self.bar.total != p.total:
            self.bar.total = p.total
        if p.phase == "embed":
            self.bar.set_postfix(embedded=p.embedded, failed=p.failed, refresh=False)
        self.bar.update(p.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _progress_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--progress/--no-progress", default=None,
                        help="Show progress bars on stderr. Default: when stderr is a terminal."
                        )(f)


def _print_summary(summary: IndexSummary, as_json: bool, what: str = "images") -> None:
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
        return
    click.echo(
        f"{summary.added} added, {summary.updated} updated, {summary.removed} removed, "
        f"{summary.unchanged} unchanged, {summary.failed} failed "
        f"({summary.embedded} {what} embedded)"
    )
    shown = summary.errors[:20]
    for e in shown:
        click.echo(f"  skipped {e.path}: {e.reason}", err=True)
    if len(summary.errors) > len(shown):
        click.echo(f"  ... and {len(summary.errors) - len(shown)} more (see --json)", err=True)


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
@click.option("--index-memory", default=None, metavar="SIZE",
              help="Memory budget of the vector indexes, e.g. 2G (default 4G; remembered). "
                   "It decides between exact, IVF and compressed IVF indexes.")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default=None,
              help="Embed with the model's int8 ONNX variant (faster on CPU, vectors within "
                   "about 0.999 cosine). Chosen when a collection is created. Default: fp32.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@_progress_option
@click.pass_context
def index(ctx: click.Context, paths: tuple[Path, ...], model: str | None,
          pretrained: str | None, device: str, hidden: bool, strict: bool,
          max_pixels: int | None, batch_size: int, workers: int | None, no_captions: bool,
          index_memory: str | None, precision: str | None, as_json: bool,
          progress: bool | None) -> None:
    """Index image files and folders (recursively). Unchanged files are skipped; changed ones
    are re-embedded; files gone from these folders are removed.

    A caption file beside an image (photo.txt for photo.jpg) is stored as its caption."""
    ctx.meta["json"] = as_json
    col = _open(ctx, model, pretrained, device, create=True, precision=precision)
    bar = _Progress(sys.stderr.isatty() if progress is None else progress)
    try:
        summary = col.index(paths, hidden=hidden, strict=strict, max_pixels=max_pixels,
                            batch_size=batch_size, workers=workers, captions=not no_captions,
                            index_memory=index_memory, progress=bar)
    finally:
        bar.close()
    _print_summary(summary, as_json)


@cli.command("add-texts")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@_progress_option
@click.pass_context
def add_texts(ctx: click.Context, file: Path, model: str | None, pretrained: str | None,
              device: str, as_json: bool, progress: bool | None) -> None:
    """Add texts from FILE: one text per line, or JSONL objects with "text", an optional "id"
    (a text with a known id is replaced) and any other fields as metadata."""
    col = _open(ctx, model, pretrained, device, create=True)
    bar = _Progress(sys.stderr.isatty() if progress is None else progress, unit="text")
    try:
        summary = col.add_texts(file, progress=bar)
    finally:
        bar.close()
    _print_summary(summary, as_json, what="texts")


def _weighted_terms(kind: str, values: tuple[str, ...], sign: float = 1.0) -> list[Any]:
    from .query import Term, parse_weighted

    terms = []
    for raw in values:
        weight, value = parse_weighted(raw)
        if kind == "image" and os.path.exists(raw):
            weight, value = 1.0, raw  # a file whose name starts with "2:" is still a file
        terms.append(Term(kind, value, sign * weight))  # type: ignore[arg-type]
    return terms


@cli.command()
@click.argument("texts", nargs=-1)
@click.option("--image", "images", multiple=True, metavar="[W:]PATH",
              help="Search with an image file (repeatable).")
@click.option("--like", "likes", multiple=True, metavar="[W:]ID",
              help="Search with a stored item's vector (repeatable).")
@click.option("--add", "adds", multiple=True, metavar="TEXT", help="Add a text term.")
@click.option("--subtract", "subtracts", multiple=True, metavar="TEXT",
              help="Subtract a text term (push results away from it).")
@click.option("--target", type=click.Choice(["images", "texts"]), default="images",
              show_default=True, help="Search images, or stored texts and captions.")
@click.option("-k", "--top", "k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Number of results.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many results "
              "(paging).")
@click.option("--path", "path_glob", metavar="GLOB",
              help="Only paths matching a glob (e.g. '*/2021/*.jpg'), or under a folder.")
@click.option("--after", metavar="DATE", help="Taken (or modified) on or after DATE.")
@click.option("--before", metavar="DATE", help="Taken (or modified) before DATE.")
@click.option("--tag", "tags", multiple=True, help="Only items with this tag (repeatable).")
@click.option("--where", "wheres", multiple=True, metavar="'FIELD OP VALUE'",
              help="Any filter, e.g. 'width >= 1024', 'camera ~ *canon*', 'meta.brand = acme' "
                   "(repeatable; see docs for fields).")
@click.option("--hybrid", is_flag=True,
              help="Fuse keyword matches (file names, captions, texts, tags) with the vector "
                   "ranking (reciprocal rank fusion).")
@click.option("--keyword-weight", type=float, default=1.0, show_default=True,
              help="Weight of the keyword ranking in --hybrid.")
@click.option("--rerank", metavar="STAGES",
              help="Re-ranking pipeline, e.g. exact,mmr:0.7,dedup:0.95,model:ViT-B-32@TAG")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hit.")
@click.option("--paths", "paths_only", is_flag=True, help="Print bare paths, one per line.")
@model_options
@click.pass_context
def search(ctx: click.Context, texts: tuple[str, ...], images: tuple[str, ...],
           likes: tuple[str, ...], adds: tuple[str, ...], subtracts: tuple[str, ...],
           target: str, k: int, offset: int, path_glob: str | None, after: str | None,
           before: str | None, tags: tuple[str, ...], wheres: tuple[str, ...], hybrid: bool,
           keyword_weight: float, rerank: str | None, as_json: bool, paths_only: bool,
           model: str | None, pretrained: str | None, device: str) -> None:
    """Search by text, image or stored item. Each TEXT argument is a term; prefix a weight
    to weigh it, e.g. '2:red car' or '-1:people'. Terms are combined as a weighted sum."""
    from .filters import Filter, parse_date, parse_where, path_filter
    from .query import Hybrid, Query
    from .rerank import parse_pipeline

    terms = (
        _weighted_terms("text", texts) + _weighted_terms("text", adds)
        + _weighted_terms("text", subtracts, -1.0) + _weighted_terms("image", images)
        + _weighted_terms("item", likes)
    )
    filters = [parse_where(w) for w in wheres]
    if path_glob:
        filters.append(path_filter(path_glob))
    if after:
        parse_date(after, "--after")
        filters.append(Filter("date", ">=", after))
    if before:
        parse_date(before, "--before")
        filters.append(Filter("date", "<", before))
    filters += [Filter("tag", "=", t) for t in tags]
    query = Query(terms, target=target, k=k, offset=offset, filters=filters,
                  hybrid=Hybrid(keyword_weight=keyword_weight) if hybrid else None,
                  rerank=parse_pipeline(rerank))
    query.validate()
    col = _open(ctx, model, pretrained, device, one_shot=True)
    hits = col.run(query)
    if as_json:
        for h in hits:
            click.echo(json.dumps(h.to_dict(), ensure_ascii=False))
    elif paths_only:
        for h in hits:
            click.echo(h.path if h.path else h.text)
    else:
        _print_hits(hits)


def _print_hits(hits: list[Hit]) -> None:
    if not hits:
        click.echo("no results", err=True)
        return
    width = shutil.get_terminal_size((120, 20)).columns
    id_w = max(len(str(h.id)) for h in hits)
    click.echo(f"{'#':>3}  {'score':>6}  {'id':>{id_w}}  {'kind':<5}  result")
    for rank, h in enumerate(hits, 1):
        what = h.path if h.kind == "image" else repr(h.text)
        if h.kind == "text" and h.path:
            what += f"  (caption of {h.path})"
        line = f"{rank:>3}  {h.score:>6.3f}  {h.id:>{id_w}}  {h.kind:<5}  {what}"
        click.echo(line if len(line) <= width else line[: width - 3] + "...")


@cli.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-k", "--top", "k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per text.")
@model_options
@click.pass_context
def caption(ctx: click.Context, image: Path, k: int, as_json: bool, model: str | None,
            pretrained: str | None, device: str) -> None:
    """Describe IMAGE with the stored texts and captions that match it best (captioning by
    retrieval; add a caption corpus with add-texts). IMAGE may also be a stored item id."""
    col = _open(ctx, model, pretrained, device, one_shot=True)
    target: str | int = int(str(image)) if str(image).isdigit() and not image.exists() else image
    hits = col.caption(target, k=k)
    if as_json:
        for h in hits:
            click.echo(json.dumps(h.to_dict(), ensure_ascii=False))
    else:
        _print_hits(hits)


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
@click.option("--json", "as_json", is_flag=True)
@_progress_option
@click.pass_context
def tag(ctx: click.Context, labels_file: Path, templates: tuple[str, ...], top: int,
        min_score: float, as_json: bool, progress: bool | None) -> None:
    """Zero-shot tagging of every image against a label vocabulary. Tags are stored with
    their scores; use them in --tag / --where 'tag = X' filters and hybrid search. Images
    already tagged with the same labels and settings are skipped."""
    from .collection import DEFAULT_TEMPLATES
    from .errors import InputError

    try:
        labels = labels_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{labels_file}: cannot read labels ({exc})") from None
    col = _open(ctx, one_shot=True)
    bar = _Progress(sys.stderr.isatty() if progress is None else progress, unit="image")
    try:
        result = col.tag(labels, templates=templates or DEFAULT_TEMPLATES, top=top,
                         min_score=min_score, progress=bar)
    finally:
        bar.close()
    click.echo(json.dumps(result) if as_json else
               f"{result['tagged']} images tagged, {result['unchanged']} unchanged, "
               f"{result['labels']} labels")


@cli.command()
@click.option("--threshold", type=click.FloatRange(-1, 1), default=0.95, show_default=True,
              help="Cosine similarity at which two images count as duplicates.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per cluster.")
@click.pass_context
def duplicates(ctx: click.Context, threshold: float, as_json: bool) -> None:
    """Clusters of near-duplicate images in the collection."""
    col = _open(ctx)
    clusters = col.duplicates(threshold)
    for c in clusters:
        if as_json:
            click.echo(json.dumps(c, ensure_ascii=False))
        else:
            click.echo(f"{len(c['ids'])} images:")
            for p in c["paths"]:
                click.echo(f"  {p}")
    if not as_json:
        click.echo(f"{len(clusters)} clusters", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def info(ctx: click.Context, as_json: bool) -> None:
    """Show the collection's model, item counts, indexes and disk use."""
    col = _open(ctx)
    data = col.info()
    if as_json:
        click.echo(json.dumps(data))
        return
    model = data["model"]
    name = model["name"] + (f" ({model['pretrained']})" if model["pretrained"] else "")
    rows = [
        ("collection", data["path"]),
        ("model", name + (f", {data['dim']} dimensions" if data["dim"] else "")),
        ("items", f"{data['counts']['image']} images, {data['counts']['text']} texts"),
    ]
    for modality, d in data["index"].items():
        kind = d["type"] + (f"/{d['params']['codec']}" if d["params"].get("codec") else "")
        params = ", ".join(f"{k}={v}" for k, v in {**d["params"], **d["search_params"]}.items()
                           if k != "codec")
        recall = d.get("recall_at_10")
        by_kind = ", ".join(f"{k} queries {v:.3f}"
                            for k, v in d.get("recall_at_10_by_kind", {}).items())
        rows.append((f"{modality} index", f"{kind}, {d['ntotal']} vectors, "
                     f"{d['bytes_per_vector']:.0f} bytes/vector"
                     + (f", recall@10 {recall:.3f}" if recall is not None else "")
                     + (f" [{by_kind}]" if by_kind else "")
                     + (f" ({params})" if params else "")))
    rows += [("disk", _human_bytes(data["disk_bytes"])),
             ("last indexed", data["last_indexed"] or "never")]
    for key, value in rows:
        click.echo(f"{key:<14}{value}")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print {\"removed\": N}.")
@click.pass_context
def remove(ctx: click.Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Remove images (and their captions) at these paths or under these folders from the
    collection. Files on disk are not touched."""
    col = _open(ctx)
    n = col.remove(paths)
    click.echo(json.dumps({"removed": n}) if as_json else f"{n} removed")


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
              help="Peak learning rate (default 5e-4 from scratch, 1e-5 fine-tuning).")
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
@click.option("--json", "as_json", is_flag=True, help="Print per-epoch metrics as JSON.")
@_progress_option
def train(data: Path, out: Path, model: str | None, pretrained: str | None, from_scratch: bool,
          lock_image: bool, lock_text: bool, epochs: int, batch_size: int, lr: float | None,
          weight_decay: float, warmup_steps: int | None, val_fraction: float, seed: int,
          workers: int | None, device: str, half_weights: bool, resume: bool, as_json: bool,
          progress: bool | None) -> None:
    """Train or fine-tune a model on captioned images in DATA: a folder of images with
    sidecar captions (x.jpg + x.txt, one caption per line), or a CSV/JSONL file of image
    paths and captions. The result loads with --model local-dir:OUT."""
    from .encoders import DEFAULT_MODEL
    from .train import TrainConfig
    from .train import train as run_train

    if model is None:
        model = DEFAULT_MODEL.name
        pretrained = pretrained or (None if from_scratch else DEFAULT_MODEL.pretrained)
    cfg = TrainConfig(
        data=str(data), out=str(out), model=model, pretrained=pretrained,
        from_scratch=from_scratch, lock_image=lock_image, lock_text=lock_text, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
        seed=seed, val_fraction=val_fraction, workers=workers, device=device,
        half_weights=half_weights)
    show = sys.stderr.isatty() if progress is None else progress
    bar = _TrainProgress(show, as_json)
    try:
        result = run_train(cfg, resume=resume, progress=bar)
    finally:
        bar.close()
    for e in result.skipped[:20]:
        click.echo(f"  skipped {e.path}: {e.reason}", err=True)
    if len(result.skipped) > 20:
        click.echo(f"  ... and {len(result.skipped) - 20} more skipped", err=True)
    if as_json:
        click.echo(json.dumps({"model": result.model, "train_images": result.train_images,
                               "val_images": result.val_images, "epochs": result.epochs,
                               "skipped": [e.__dict__ for e in result.skipped]}))
    else:
        click.echo(f"model written to {result.out}; use it with --model {result.model}")


class _TrainProgress:
    """Per-step bar and one line of metrics per epoch (on stderr)."""

    def __init__(self, bars: bool, quiet_lines: bool) -> None:
        self.bars, self.quiet_lines = bars, quiet_lines
        self.bar: Any = None

    def __call__(self, p: Any) -> None:
        if p.phase == "eval":
            self.close()
            if not self.quiet_lines:
                metrics = "  ".join(f"{k} {v:.3f}" for k, v in (p.metrics or {}).items())
                loss = f"loss {p.loss:.4f}  " if p.loss is not None else ""
                click.echo(f"epoch {p.epoch}/{p.epochs}  {loss}{metrics}", err=True)
            return
        if not self.bars:
            return
        from tqdm import tqdm

        desc = "decoding" if p.phase == "decode" else f"epoch {p.epoch}/{p.epochs}"
        if self.bar is None or self.bar.desc != desc:
            self.close()
            self.bar = tqdm(total=p.steps, desc=desc, unit="img" if p.phase == "decode" else
                            "step", file=sys.stderr, dynamic_ncols=True)
        if p.loss is not None:
            self.bar.set_postfix(loss=f"{p.loss:.3f}", lr=f"{p.lr:.2e}", refresh=False)
        self.bar.update(p.step - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@cli.command()
@click.option("--images", "n", type=click.IntRange(10, 100_000), default=300, show_default=True,
              help="How many demo images to generate.")
@click.option("--folder", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where to write them (default: demo/images under $RETRIEVAL_HOME).")
@_progress_option
@click.pass_context
def demo(ctx: click.Context, n: int, folder: Path | None, progress: bool | None) -> None:
    """Try it offline: generate synthetic images of coloured shapes, index them with the
    built-in demo model, and run text, image and image-to-text searches."""
    from .config import home
    from .demo import DEMO_QUERIES, prepare_demo

    base = home() / "demo"
    folder = folder or base / "images"
    col_path = ctx.obj["collection"] or base / "collection"
    click.echo(f"Generating {n} demo images (coloured shapes with captions) in {folder}")
    bar = _Progress(sys.stderr.isatty() if progress is None else progress)
    try:
        col, summary = prepare_demo(folder, col_path, n=n, progress=bar)
    finally:
        bar.close()
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
    caption = sample.with_suffix(".txt").read_text().strip()
    show(f"Image search: {sample.name} ({caption})", col.search(image=sample, k=5))
    show(f"Image to text: best descriptions of {sample.name}",
         col.search(image=sample, target="texts", k=3))
    click.echo("Try next:")
    prefix = f"retrieval --collection {col_path}"
    click.echo(f'  {prefix} search "a large orange star"')
    click.echo(f"  {prefix} search --image {sample} --target texts")
    click.echo("  retrieval index ~/Pictures        # your photos, with the default model "
               "ViT-B-32 (downloaded once)")
    click.echo("  retrieval --help")


@cli.group()
def model() -> None:
    """The collection's model: export it to ONNX, list exports."""


@model.command("export")
@click.option("--int8", is_flag=True, help="Also make the int8 variant (dynamic quantisation).")
@click.option("--force", is_flag=True, help="Try again a model whose export failed before.")
@click.option("--json", "as_json", is_flag=True, help="Print the export's manifest as JSON.")
@_progress_option
@click.pass_context
def model_export(ctx: click.Context, int8: bool, force: bool, as_json: bool,
                 progress: bool | None) -> None:
    """Export the collection's model to ONNX (both towers, parity-checked against torch), so
    that searches never load torch. Index runs do this by themselves; this is for collections
    made before, or to add the int8 variant."""
    col = _open(ctx)
    bar = _Progress(sys.stderr.isatty() if progress is None else progress)
    try:
        export = col.export_model(int8=int8, force=force, progress=bar)
    finally:
        bar.close()
    if as_json:
        click.echo(json.dumps({"folder": str(export.folder), **export.manifest}))
    elif export.ok:
        click.echo(_describe_export(export))
    else:
        raise click.ClickException(f"{col.spec} cannot be exported, so it stays on torch: "
                                   f"{export.reason}")


@model.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per export.")
def model_list(as_json: bool) -> None:
    """The exported models on this machine (in $RETRIEVAL_EXPORTS)."""
    from .encoders.store import ExportStore

    store = ExportStore()
    exports = store.all()
    for export in exports:
        if as_json:
            click.echo(json.dumps({"folder": str(export.folder), **export.manifest}))
        else:
            click.echo(_describe_export(export))
    if not as_json:
        click.echo(f"{len(exports)} exports in {store.root}", err=True)


def _describe_export(export: Any) -> str:
    size = sum(p.stat().st_size for p in export.folder.iterdir() if p.is_file())
    head = f"{export.spec}  {export.folder}  {_human_bytes(size)}"
    if not export.ok:
        return f"{head}\n  failed: {export.reason}"
    parity = export.manifest.get("parity", {})
    lines = [head, f"  identity {export.identity[:16]}, {export.dim} dimensions, variants "
             + ", ".join(sorted(export.manifest.get("variants", {})))]
    if parity:
        lines.append("  parity with torch: " + ", ".join(
            f"{tower} min cosine {parity[tower]['min_cos']:.6f} max diff "
            f"{parity[tower]['max_abs']:.1e}" for tower in ("image", "text")))
    speed = export.manifest.get("speed")
    if speed:
        lines.append(f"  images/s on this CPU: onnx {speed['onnx_images_per_s']}, torch "
                     f"{speed['torch_images_per_s']} (indexing uses {speed['image_runtime']})")
    return "\n".join(lines)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; use 0.0.0.0 only behind a token and a firewall.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token", envvar="RETRIEVAL_TOKEN", show_envvar=True, default=None,
              help="Require 'Authorization: Bearer TOKEN' on every endpoint.")
@click.option("--max-upload", type=click.IntRange(min=1), default=20, show_default=True,
              help="Largest accepted upload, in MB.")
@model_options
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, token: str | None, max_upload: int,
          model: str | None, pretrained: str | None, device: str) -> None:
    """Serve the collection over HTTP: a JSON API (OpenAPI at /docs) and a web page at /."""
    import uvicorn

    from .server import create_app

    col = _open(ctx, model, pretrained, device)
    encoder = col.encoder  # load the model before the first request, and fail early
    if hasattr(encoder, "load"):
        encoder.load("text", "image")
    app = create_app(col, token=token, max_upload_bytes=max_upload * 1024 * 1024)
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        click.echo("warning: serving on a public address without --token", err=True)
    click.echo(f"serving {col.path} on http://{host}:{port}/ (API docs at /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def main() -> None:
    try:
        cli(prog_name="retrieval")
    finally:
        # Python's final garbage collection walks every object still alive, about 0.15 s
        # after a search (SQLAlchemy's alone take 0.1 s); frozen objects are skipped, while
        # finalizers and exit hooks still run.
        gc.freeze()


if __name__ == "__main__":
    main()
