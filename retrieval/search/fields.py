"""The query's input, declared once: each field a search takes, with its default, its help text,
its limits in words and how each surface spells it.

Generated from :data:`FIELDS`: the options of ``retrieval search`` (other than its term syntax:
TEXT arguments, ``--image``, ``--like``, ``--add``, ``--subtract``), the JSON body of
``POST /search`` and the form of ``POST /search/upload``. Spelled out as typed signatures, and
checked against :data:`FIELDS` by ``tests/test_query_declaration.py`` (names, order, defaults):
:func:`~retrieval.search.builder.build_query`, ``Collection.search`` and ``Client.search``.

A new field is one :class:`QueryField` here, its rule in ``build_query``, and the same keyword
in the two methods (the test names any that lacks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .builder import MAX_K, MAX_KEYWORD_WEIGHT, MAX_OFFSET, MAX_TERMS, MAX_TEXT

Target = Literal["image", "text", "video", "images", "texts", "videos"]  # plurals too
Cutoff = Literal["auto"]


@dataclass(frozen=True)
class QueryField:
    """One input of a search.

    ``name`` is the keyword argument, the JSON key and the form field; ``default`` is the same
    on every surface (``()`` for a list); ``help`` is what ``--help`` and the HTTP schema show;
    ``limits`` says in words what the query builder accepts (the HTTP schema shows them; the
    builder checks them). ``json`` is the type of the JSON value. ``flags`` are the command
    line's option (none: the command line spells it as terms); ``form`` says whether the upload
    form takes it."""

    name: str
    default: Any
    help: str
    json: Any
    limits: str = ""
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    show_default: bool = False
    form: bool = True
    max_length: int | None = None  # items of a JSON list, characters of a JSON string
    example: str | None = None

    @property
    def description(self) -> str:
        """The help text with the limits, for the HTTP schema."""
        if not self.limits:
            return self.help
        return f"{self.help.rstrip('.')} ({self.limits})."

    @property
    def repeatable(self) -> bool:
        """A list: a JSON array, a repeatable option, a form field given any number of times."""
        return self.default == ()


FIELDS: tuple[QueryField, ...] = (
    QueryField("text", None, "A text to search for.", str | None,
               limits=f"at most {MAX_TEXT} characters"),
    # The upload form's image is its file part; a JSON body has no room for files.
    QueryField("image", None, "An image file to search with, base64-encoded.", str | None,
               form=False),
    QueryField("like", None, "Search like this stored item (its id).", int | None),
    # Hundreds of numbers are no form field.
    QueryField("vector", None, "A raw query vector, of the collection's dimension.",
               list[float] | None, form=False),
    # Objects are no form field.
    QueryField("terms", (), "Weighted terms: kind (text, image as base64, like, vector), value "
               "and weight.", list[dict[str, Any]], limits=f"at most {MAX_TERMS}", form=False),
    QueryField("target", "image", "Search images, videos (their shots), or stored texts "
               "and captions.",
               Target, flags=("--target",), show_default=True),
    QueryField("segments", False, "A video search lists every matching shot, not only each "
               "video's best.", bool, flags=("--segments",)),
    QueryField("k", 10, "Number of results.", int, limits=f"1 to {MAX_K}", flags=("-k", "--top"),
               show_default=True),
    QueryField("offset", 0, "Skip this many results (paging).", int, limits=f"0 to {MAX_OFFSET}",
               flags=("--offset",)),
    QueryField("path", None, "Only paths matching a glob (e.g. '*/2021/*.jpg'), or under a "
               "folder.", str | None, flags=("--path",), metavar="GLOB"),
    QueryField("after", None, "Taken (or modified) on or after DATE.", str | None,
               flags=("--after",), metavar="DATE"),
    QueryField("before", None, "Taken (or modified) before DATE.", str | None,
               flags=("--before",), metavar="DATE"),
    QueryField("tags", (), "Only items with this tag (repeatable).", list[str], flags=("--tag",),
               max_length=32),
    QueryField("filters", (), "Any filter, e.g. 'width >= 1024', 'camera ~ *canon*', "
               "'meta.brand = acme' (repeatable; see docs for fields).", list[str],
               flags=("--where",), metavar="'FIELD OP VALUE'", max_length=32),
    # An image file or an item is no keyword: the upload form (an image search) has no room
    # for it.
    QueryField("keywords", False, "Rank by keywords alone (file names, captions, recognised "
               "text, texts, tags), no vectors; text terms only, not with --hybrid, --min-score, "
               "--cutoff or --rerank.", bool, flags=("--keywords",), form=False),
    QueryField("hybrid", False, "Fuse keyword matches (file names, captions, recognised text, "
               "texts, tags) with the vector ranking (reciprocal rank fusion).", bool,
               flags=("--hybrid",)),
    QueryField("keyword_weight", None, "Weight of the keyword ranking in --hybrid (default 1).",
               float | None, limits=f"0 to {MAX_KEYWORD_WEIGHT}", flags=("--keyword-weight",)),
    QueryField("rerank", None, "Re-ranking pipeline, e.g. "
               "exact,mmr:0.7,dedup:0.95,model:ViT-B-32@TAG", str | None, flags=("--rerank",),
               metavar="STAGES", max_length=500, example="exact,mmr:0.7,dedup:0.95"),
    # Both cut the ranked list before paging (see retrieval.search.cutoff).
    QueryField("min_score", None, "Only results whose similarity (cosine) is at least S; not "
               "with --hybrid or a model rerank stage.", float | None, limits="-1 to 1",
               flags=("--min-score",), metavar="S"),
    QueryField("cutoff", None, "End the results where their similarity stops standing out "
               "from what the query scores on the collection at large (auto: calibrated per "
               "query); not with --hybrid or a model rerank stage.", Cutoff | None,
               flags=("--cutoff",)),
)

NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
