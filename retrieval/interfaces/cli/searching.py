"""Commands that read a collection: search, caption, duplicates, info."""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import click

from ...pathnames import shown
from ...search.fields import FIELDS, QueryField
from .describing import generation_options, take_generation
from .group import cli, json_option, model_options, open_collection
from .output import counted, echo_json, echo_json_lines, echo_path, human_bytes, print_hits


def _terms(kind: str, values: tuple[str, ...], sign: float = 1.0) -> list[Any]:
    """Terms from ``[W:]VALUE`` arguments (a weight prefix is the command line's syntax)."""
    from ...search.query import Term, parse_weighted

    terms = []
    for raw in values:
        weight, value = parse_weighted(raw)
        if kind == "image" and os.path.exists(raw):
            weight, value = 1.0, raw  # a file whose name starts with "2:" is still a file
        terms.append(Term(kind, value, sign * weight))  # type: ignore[arg-type]
    return terms


def query_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The query's options, one per field of the declaration that has a command-line flag
    (:data:`~retrieval.search.fields.FIELDS`), in its order; each reaches the command under
    the field's name."""
    for field in reversed([q for q in FIELDS if q.flags]):
        f = click.option(*field.flags, field.name, default=field.default, help=field.help,
                         metavar=field.metavar, show_default=field.show_default,
                         **_click_type(field))(f)
    return f


def _click_type(field: QueryField) -> dict[str, Any]:
    """How click parses a field of this JSON type: a flag, a repeatable option, a choice or a
    number (a text needs nothing)."""
    if field.json is bool:
        return {"is_flag": True}
    if field.repeatable:
        return {"multiple": True}
    kind = field.json
    if isinstance(kind, types.UnionType) or get_origin(kind) is Union:  # X | None: optional
        kind = next(a for a in get_args(kind) if a is not type(None))
    if get_origin(kind) is Literal:
        return {"type": click.Choice(get_args(kind))}
    return {"type": kind} if kind in (int, float) else {}


@cli.command()
@click.argument("texts", nargs=-1)
@click.option("--image", "images", multiple=True, metavar="[W:]PATH",
              help="Search with an image file (repeatable).")
@click.option("--like", "likes", multiple=True, metavar="[W:]ID",
              help="Search with a stored item's vector (repeatable).")
@click.option("--add", "adds", multiple=True, metavar="TEXT", help="Add a text term.")
@click.option("--subtract", "subtracts", multiple=True, metavar="TEXT",
              help="Subtract a text term (push results away from it).")
@query_options
@json_option("One JSON object per hit.")
@click.option("--paths", "paths_only", is_flag=True, help="Print bare paths, one per line.")
@model_options
@click.pass_context
def search(ctx: click.Context, texts: tuple[str, ...], images: tuple[str, ...],
           likes: tuple[str, ...], adds: tuple[str, ...], subtracts: tuple[str, ...],
           as_json: bool, paths_only: bool, model: str | None, pretrained: str | None,
           device: str, **fields: Any) -> None:
    """Search by text, image or stored item. Each TEXT argument is a term; prefix a weight
    to weigh it, e.g. '2:red car' or '-1:people'. Terms are combined as a weighted sum."""
    from ...search import build_query

    terms = (_terms("text", texts) + _terms("text", adds) + _terms("text", subtracts, -1.0)
             + _terms("image", images) + _terms("like", likes))
    query = build_query(terms=terms, **fields)  # the options of query_options
    col = open_collection(ctx, model, pretrained, device, one_shot=True)
    hits = col.run(query)
    if as_json:
        echo_json_lines(h.to_dict() for h in hits)
    elif paths_only:
        for h in hits:
            if h.path:
                echo_path(h.path)
            else:
                click.echo(h.text)
    else:
        print_hits(hits, first=query.offset + 1, kind=_score_kind(query))
        if not hits and query.target == "image" and not query.offset:
            videos = col.info()["counts"].get("video", 0)
            if videos:  # a reader who indexed a folder of videos and searched as for images
                click.echo(f"the collection holds {counted(videos, 'video')}: search "
                           f"{'it' if videos == 1 else 'them'} with --target video", err=True)
        if hits.total is not None:
            click.echo(_cut_note(hits.total, hits.threshold, query.offset), err=True)


def _cut_note(total: int, threshold: float | None, offset: int) -> str:
    """Where the cut ended the results: ``12 results down to similarity 0.431``."""
    if threshold is None:
        return "no results: nothing to cut"
    note = f"{counted(total, 'result')} down to similarity {threshold:.3f}"
    return note + (f"; this page starts at {offset + 1}" if offset >= total > 0 else "")


def _score_kind(query: Any) -> str:
    """What a query's scores are, for hits that do not say (see :mod:`.table`)."""
    if query.keywords:
        return "keywords"
    return "reranked" if query.rerank else "fused" if query.hybrid is not None else "similarity"


@cli.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-k", "--top", "k", type=int, default=5, show_default=True)
@click.option("--generate", is_flag=True,
              help="Write a new caption with a CoCa model (--captioner) instead.")
@generation_options
@json_option("One JSON object per text.")
@model_options
@click.pass_context
def caption(ctx: click.Context, image: Path, k: int, generate: bool, as_json: bool,
            model: str | None, pretrained: str | None, device: str, **kwargs: Any) -> None:
    """Captions for IMAGE: the stored texts and captions that match it best (captioning by
    retrieval; add a caption corpus with add-texts), or with --generate one written by a CoCa
    model (printed, not stored: generate-captions stores them). IMAGE may also be a stored
    item id."""
    target: Path | int = int(str(image)) if str(image).isdigit() and not image.exists() else image
    if generate:
        _generate(ctx, target, device, as_json, kwargs)
        return
    col = open_collection(ctx, model, pretrained, device, one_shot=True)
    hits = col.caption(target, k=k)
    if as_json:
        echo_json_lines(h.to_dict() for h in hits)
    else:
        print_hits(hits, kind="similarity")


def _generate(ctx: click.Context, target: Path | int, device: str, as_json: bool,
              kwargs: dict[str, Any]) -> None:
    from ...config import default_collection_path
    from ...enrich.captions import caption_images, captioner_choices
    from ...errors import CollectionNotFoundError, InputError

    captioner, tag, options = take_generation(kwargs)
    col = None
    if not captioner or isinstance(target, int):
        try:  # its default captioner, or the item's file
            col = open_collection(ctx, one_shot=True)
        except CollectionNotFoundError:
            if isinstance(target, int):
                raise
            where = ctx.obj["collection"] or default_collection_path()
            raise InputError(f"no captioner named, and no collection at {where} to take one "
                             f"from; name one with --captioner: {captioner_choices()}"
                             ) from None
    path = col.get(target).path if col is not None and isinstance(target, int) else str(target)
    if path is None:
        raise click.ClickException(f"item {target} is a text, not an image")
    (text,), spec = caption_images([path], captioner, pretrained=tag, options=options,
                                   collection_spec=col.spec if col else None, device=device)
    if as_json:
        echo_json({"path": shown(path), "caption": text, "captioner": str(spec),
                   "options": options.key()})
    else:
        click.echo(text)


@cli.command()
@click.option("--threshold", type=click.FloatRange(-1, 1), default=0.95, show_default=True,
              help="Cosine similarity at which two images count as duplicates.")
@json_option("One JSON object per cluster.")
@click.pass_context
def duplicates(ctx: click.Context, threshold: float, as_json: bool) -> None:
    """Clusters of near-duplicate images in the collection: each member with its cosine
    similarity to its closest other member, byte-identical copies marked."""
    clusters = open_collection(ctx).duplicates(threshold)
    if as_json:
        echo_json_lines(clusters)
        return
    for c in clusters:
        click.echo(_cluster_head(c))
        id_w = max(len(str(i)) for i in c["ids"])
        for m in c["members"]:
            sim = "" if m["similarity"] is None else f"{m['similarity']:.3f}"
            same = ", ".join(map(str, m["identical_to"]))
            click.echo(f"  {sim:>5}  {m['id']:>{id_w}}  {shown(m['path'])}"
                       + (f"  (identical to {same})" if same else ""))
    click.echo(counted(len(clusters), "cluster"), err=True)


def _cluster_head(c: dict[str, Any]) -> str:
    """``3 images, similarity 0.962 to 1.000:``; ``2 identical images:`` for copies."""
    if c["identical"]:
        return f"{len(c['ids'])} identical images:"
    sims = [m["similarity"] for m in c["members"] if m["similarity"] is not None]
    if not sims:
        return f"{len(c['ids'])} images:"
    low, high = f"{min(sims):.3f}", f"{max(sims):.3f}"
    return f"{len(c['ids'])} images, similarity {low}" + (f" to {high}:" if high != low else ":")


@cli.command()
@json_option("Print one JSON object.")
@click.pass_context
def info(ctx: click.Context, as_json: bool) -> None:
    """Show the collection's model, item counts, indexes and disk use."""
    data = open_collection(ctx).info()
    if as_json:
        echo_json(data)
        return
    model = data["model"]
    name = model["name"] + (f" ({model['pretrained']})" if model["pretrained"] else "")
    rows = [
        ("collection", shown(data["path"])),
        ("model", name + (f", {data['dim']} dimensions" if data["dim"] else "")
         + (f", {data['precision']}" if data["precision"] != "fp32" else "")),
        ("items", f"{counted(data['counts']['image'], 'image')}, "
                  f"{counted(data['counts']['text'], 'text')}" + _videos(data["counts"])),
    ]
    rows += [(f"{kind} index", _describe_index(d)) for kind, d in data["index"].items()]
    rows += [("disk", human_bytes(data["disk_bytes"])),
             ("last indexed", data["last_indexed"] or "never")]
    for key, value in rows:
        click.echo(f"{key:<14}{value}")


def _videos(counts: dict[str, int]) -> str:
    """``, 2 videos (41 shots)`` where the collection holds videos."""
    if not counts.get("video"):
        return ""
    return f", {counted(counts['video'], 'video')} ({counted(counts.get('shot', 0), 'shot')})"


def _describe_index(d: dict[str, Any]) -> str:
    kind = d["type"] + (f"/{d['params']['codec']}" if d["params"].get("codec") else "")
    params = ", ".join(f"{k}={v}" for k, v in {**d["params"], **d["search_params"]}.items()
                       if k != "codec")
    recall = d.get("recall_at_10")
    by_kind = ", ".join(f"{k} queries {v:.3f}"
                        for k, v in d.get("recall_at_10_by_kind", {}).items())
    return (f"{kind}, {d['ntotal']} vectors, {d['bytes_per_vector']:.0f} bytes/vector"
            + (f", recall@10 {recall:.3f}" if recall is not None else "")
            + (f" [{by_kind}]" if by_kind else "") + (f" ({params})" if params else ""))
