"""How the command line shows things: progress bars, summaries, hits, exports, sizes."""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import click

from ...pathnames import shown

if TYPE_CHECKING:
    from ...ingest import IndexProgress, IndexSummary
    from ...search import Hit


class Progress:
    """Draws the library's progress reports as tqdm bars on stderr."""

    LABELS: ClassVar[dict[str, str]] = {
        "scan": "scanning", "embed": "embedding", "captions": "captions", "remove": "removing",
        "tag": "tagging", "generate": "captioning", "ocr": "reading text", "video": "videos"}
    MESSAGES = frozenset({"index", "model"})  # phases that report lines, not counts
    UNITS: ClassVar[dict[str, str]] = {"video": "s"}  # seconds of video: the rate is real time

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
                                unit=self.UNITS.get(p.phase, self.unit), file=sys.stderr,
                                dynamic_ncols=True, leave=True)
        if p.detail:
            click.echo(p.detail, err=True)
        if self.bar is None:
            return
        if p.total is not None and self.bar.total != p.total:
            self.bar.total = p.total
        if p.phase in ("embed", "video"):  # a video run's embedded: its shots' keyframes
            self.bar.set_postfix(embedded=p.embedded, failed=p.failed, refresh=False)
        elif p.phase == "ocr":  # embedded: the images text was found in
            self.bar.set_postfix(with_text=p.embedded, failed=p.failed, refresh=False)
        self.bar.update(p.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def progress_bars(option: bool | None, unit: str = "file") -> Iterator[Progress]:
    """Progress bars on stderr (``--progress``; by default when stderr is a terminal)."""
    bar = Progress(sys.stderr.isatty() if option is None else option, unit)
    try:
        yield bar
    finally:
        bar.close()


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 export``, ``2 exports``: a count with its noun in the right number."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def print_summary(summary: IndexSummary, as_json: bool, what: str = "images") -> None:
    if as_json:
        echo_json(summary.to_dict())
        return
    click.echo(
        f"{summary.added} added, {summary.updated} updated, {summary.removed} removed, "
        f"{summary.unchanged} unchanged, {summary.failed} failed "
        f"({counted(summary.embedded, what.rstrip('s'), what)}"
        + (f" and {counted(summary.shots, 'video shot')}" if summary.shots else "")
        + " embedded)")
    first = summary.errors[:20]
    for e in first:
        click.echo(f"  skipped {shown(e.path)}: {e.reason}", err=True)
    if len(summary.errors) > len(first):
        click.echo(f"  ... and {len(summary.errors) - len(first)} more (see --json)", err=True)


def print_hits(hits: list[Hit], first: int = 1, kind: str | None = None) -> None:
    """The hits table (see :mod:`.table`), numbered from ``first``; ``kind`` says what the
    scores are where the hits do not. Cut to the width of a terminal, never in a pipe."""
    from .table import OUT_OF_ORDER, hits_table, out_of_order

    if not hits:
        click.echo("no results", err=True)
        return
    columns = terminal_columns()
    styled = columns is not None and not os.environ.get("NO_COLOR")
    for line in hits_table(hits, first=first, columns=columns, styled=styled, kind=kind):
        click.echo(line)
    if out_of_order(hits):
        click.echo(OUT_OF_ORDER, err=True)


def terminal_columns(stream: Any = None) -> int | None:
    """The width to cut lines to: the terminal's, when ``stream`` (default: stdout) is one;
    None in a pipe or a file, whose lines are never cut."""
    stream = sys.stdout if stream is None else stream
    try:
        if stream is None or not stream.isatty():
            return None
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return None
    return shutil.get_terminal_size((120, 20)).columns


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def describe_export(export: Any) -> str:
    size = sum(p.stat().st_size for p in export.folder.iterdir() if p.is_file())
    head = f"{export.spec}  {export.folder}  {human_bytes(size)}"
    if not export.ok:
        return f"{head}\n  failed: {export.reason}"
    parity = export.manifest.get("parity", {})
    lines = [head, f"  identity {export.identity[:16]}, {export.dim} dimensions, variants "
             + ", ".join(sorted(export.manifest.get("variants", {})))]
    if parity:
        lines.append("  parity with torch: " + ", ".join(
            f"{tower} min cosine {parity[tower]['min_cos']:.6f} max diff "
            f"{parity[tower]['max_abs']:.1e}" for tower in ("image", "text")))
    return "\n".join(lines)


class TrainProgress:
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
                what = f"epoch {p.epoch}/{p.epochs}" if p.epoch else "before training"
                click.echo(f"{what}  {loss}{metrics}", err=True)
            return
        if p.phase == "lr" and p.loss is None:
            self.close()
            if not self.quiet_lines:
                click.echo(f"learning rate {p.lr:.2e} (range test)", err=True)
            return
        if not self.bars:
            return
        from tqdm import tqdm

        desc = {"decode": "decoding", "lr": "finding lr"}.get(p.phase,
                                                              f"epoch {p.epoch}/{p.epochs}")
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


def json_text(value: Any, encoding: str | None = None) -> str:
    """``value`` as one line of JSON with its characters as they are (CJK stays readable),
    or as ``\\uXXXX`` escapes where ``encoding`` (default: stdout's) cannot write them."""
    text = json.dumps(value, ensure_ascii=False)
    if not text.isascii():
        try:
            name = codecs.lookup(encoding or getattr(sys.stdout, "encoding", None) or "utf-8")
            # click writes UTF-8 to a stream that says ASCII (a misconfigured locale)
            text.encode("utf-8" if name.name == "ascii" else name.name)
        except (UnicodeEncodeError, LookupError):
            return json.dumps(value)
    return text


def echo_json(value: Any) -> None:
    """One JSON value on one line (see :func:`json_text`)."""
    click.echo(json_text(value))


def echo_json_lines(rows: Any) -> None:
    """One JSON object per line (for programs), characters as they are where stdout can
    encode them."""
    for row in rows:
        echo_json(row)


def echo_path(path: str) -> None:
    """A path as the bytes of the file's name, one per line (for xargs and shell loops)."""
    click.echo(os.fsencode(path))
