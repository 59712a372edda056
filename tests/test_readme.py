"""The README's examples run as written: its ```bash and ```python blocks, in README order, in a
reader's home folder holding the files they name.

What runs, and how:

* Blocks fenced as ```bash or ```python run; a plain ``` block shows output (a ``$ `` line in
  it is the command that printed it, recorded elsewhere) and does not. A block right after
  ``<!-- not run by tests/test_readme.py: REASON -->`` (an HTML comment, which markdown does
  not show) does not run either; the README keeps those few (a PostgreSQL server, a Ray
  cluster, downloads).
* The reader: ``HOME`` is a temporary folder, holding ``~/Pictures`` (synthetic shapes with
  sidecar captions from ``retrieval.training.synthetic``; ``2021/`` of them dated July 2021
  with "beach" captions, ``old/``), ``~/Downloads/cats.jpg``, ``~/products``, ``~/archive``,
  ``~/backups``, ``~/Videos/holiday.mp4`` (three shots of shapes) and, in the working folder
  (``HOME`` itself), ``photo.jpg``, ``query.jpg``, ``products.jsonl`` and ``labels.txt``.
  ``$RETRIEVAL_HOME`` is temporary and offline (``HF_HUB_OFFLINE=1``). The default
  collection is bound to the demo model before the Command line block (the test indexes
  ``~/Downloads/cats.jpg`` with ``--model demo``): it stands in for a reader's first index
  with the default model (DEFAULT_MODEL), which this machine cannot download.
* A shell line is split into commands as bash would (quotes, backslashes, ``\\`` line
  continuations, ``~`` at the start of a word, ``$NAME``, ``;`` and ``&&``, ``NAME=value``
  prefixes, ``export``; a ``#`` at the start of a word begins a comment). Pipes, redirections,
  substitutions and unquoted glob characters are refused, so a line this runner would misread
  cannot enter the README.
* ``retrieval`` (or ``.venv/bin/retrieval``) runs in this process through click's
  ``CliRunner`` and must exit 0, and a ``search`` must print hits. The exceptions are listed
  in ``ALLOWED_FAILURES``, each with its reason (a model that needs a download, a folder only
  the reader has): there the command must fail with one ``Error:`` line naming the cause.
  ``NOT_RUN`` lists the commands that do not run here, each with its reason.
* ``retrieval ... serve`` (without a port) starts in the background on a free port; the
  ``curl`` lines and the Python ``Client`` block that follow talk to it (``localhost:8000``
  and ``127.0.0.1:8000`` point at that port) and must get what they ask for, not an error
  body. ``sqlite3`` and ``cp`` run as programs (skipped where the program is missing).
* A Python block runs with ``exec`` in a fresh namespace (blocks share files, not names), its
  output captured; it must not raise.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_cli
from servers import ServerProcess

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN_MARK = re.compile(r"<!-- not run by tests/test_readme\.py: (.+) -->")
# A block of the OCR section: runs where the ocr extra is installed (and must, under CI's
# RETRIEVAL_REQUIRE_OCR=1); elsewhere it is a block not run, for that reason.
NEEDS_OCR_MARK = "<!-- needs the ocr extra: tests/test_readme.py runs it where rapidocr is -->"


def _ocr_missing() -> str | None:
    import importlib.util

    if os.environ.get("RETRIEVAL_REQUIRE_OCR") == "1" or importlib.util.find_spec("rapidocr"):
        return None
    return "the ocr extra (rapidocr) is not installed"

DOWNLOAD = "cannot be downloaded"
MISSING = "model folder not found: "
# (part of the command as split, the one error line must contain, why it cannot run here)
ALLOWED_FAILURES = (
    ("--model ViT-B-16", DOWNLOAD, "ViT-B-16's weights need a download"),
    ("--model hf-hub:laion/", DOWNLOAD, "an hf-hub: model needs a download"),
    ("local-dir:/models/my-finetune", MISSING + "/models/my-finetune",
     "a fine-tuned model only the reader has"),
    ("ckpt/epoch_10.pt", "checkpoint file not found: ", "a checkpoint only the reader has"),
    ("--precision int8", DOWNLOAD, "a new collection gets the default model, a download"),
    ("--captioner coca_ViT-B-32", DOWNLOAD, "CoCa's weights need a download"),
    ("local-dir:/models/my-coca", MISSING + "/models/my-coca", "a captioner only the reader has"),
    ("retrieval train", DOWNLOAD, "fine-tunes ViT-B-32 (TRAIN_MODEL), a download"),
    ("local-dir:~/models/products", MISSING, "the model the train line above writes"),
)
# (start of the command as split, why it does not run here)
NOT_RUN = (
    ("python3 -m venv", "makes the virtual environment this test runs in"),
    (".venv/bin/pip install", "installs from the network; done before the tests run"),
    (".venv/bin/python -m pytest", "runs the test suite, this test among them"),
    ("RETRIEVAL_TOKEN=", "binds every interface on a fixed port; the serve line above runs"),
)
PROGRAMS = ("sqlite3", "cp")  # other programs the README's shell lines use


@dataclass
class Block:
    lang: str
    lines: list[str]
    first_line: int  # README line number of lines[0]
    not_run: str | None  # the reason, for a marked block


def readme_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a markdown text, with their languages and not-run marks."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        mark = NOT_RUN_MARK.fullmatch(lines[i - 1].strip()) if i else None
        not_run = mark.group(1) if mark else None
        if i and lines[i - 1].strip() == NEEDS_OCR_MARK:
            not_run = _ocr_missing()
        blocks.append(Block(lines[i][3:].strip(), lines[i + 1:end], i + 2, not_run))
        i = end + 1
    return blocks


def logical_lines(block: Block) -> Iterator[tuple[int, str]]:
    """(README line number, line) with ``\\`` continuations joined, as a shell reads them."""
    start, parts = 0, []
    for n, line in enumerate(block.lines, block.first_line):
        start = start or n
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        yield start, "".join(parts) + line
        start, parts = 0, []


class _Words:
    """Words being read from one shell line; ``None`` while between words."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = [[]]
        self.word: list[str] | None = None

    def add(self, text: str) -> None:
        self.word = (self.word or []) + [text]

    def end_word(self) -> None:
        if self.word is not None:
            self.commands[-1].append("".join(self.word))
        self.word = None

    def end_command(self) -> None:
        self.end_word()
        self.commands.append([])


def split_commands(line: str, env: Mapping[str, str]) -> list[list[str]]:
    """The commands of one shell line, each a list of words, as bash reads the simple lines the
    README uses (see the module docstring); anything else raises ValueError."""
    words, quote, i = _Words(), "", 0
    while i < len(line):
        c, rest = line[i], line[i + 1:]
        if quote == "'":
            quote = "" if c == "'" else quote
            if c != "'":
                words.add(c)
        elif c == "\\" and (not quote or rest[:1] in ('"', "\\", "$", "`")):
            words.add(rest[:1])
            i += 1
        elif c == "$":
            m = re.match(r"\$(?:(\w+)|\{(\w+)\})", line[i:])
            name = (m.group(1) or m.group(2)) if m else ""
            if name not in env:
                raise ValueError(f"{line!r}: ${name or '?'} is not set or not supported")
            words.add(env[name])
            i += len(m.group(0)) - 1 if m else 0
        elif quote == '"':
            if c == "`":
                raise ValueError(f"{line!r}: command substitution is not supported")
            quote = "" if c == '"' else quote
            if c != '"':
                words.add(c)
        elif c in "'\"":
            quote = c
            words.add("")
        elif c.isspace():
            words.end_word()
        elif c == "#" and words.word is None:
            break
        elif c == ";" or line.startswith("&&", i):
            words.end_command()
            i += c == "&"
        elif c == "~" and words.word is None and rest[:1] in ("", "/", " "):
            words.add(env["HOME"])
        elif c in "|&<>()`*?[{":
            raise ValueError(f"{line!r}: {c!r} outside quotes is not supported by this runner")
        else:
            words.add(c)
        i += 1
    if quote:
        raise ValueError(f"{line!r}: unterminated quote")
    words.end_word()
    return [cmd for cmd in words.commands if cmd]


# -- the reader's home ----------------------------------------------------------------------------

JULY_2021 = 1626307200  # 2021-07-15, inside the README's --after 2021-06 --before 2021-09


def _shapes(folder: Path, n: int, seed: int, size: int = 64) -> list[Path]:
    """``n`` synthetic images with sidecar captions (x.png + x.txt) in ``folder``."""
    from retrieval.training.synthetic import write_dataset

    pairs = write_dataset(folder, n, seed=seed, size=size)
    for extra in ("captions.jsonl", "scenes.jsonl"):
        (folder / extra).unlink()
    return [path for path, _ in pairs]


def _jpeg(path: Path, seed: int) -> None:
    import random

    from retrieval.training.synthetic import random_scene, render

    path.parent.mkdir(parents=True, exist_ok=True)
    render(random_scene(random.Random(seed)), 64, seed=seed).convert("RGB").save(path)


def _text_image(path: Path, lines: list[str]) -> None:
    """A photo of printed lines, in Pillow's own font (no system font needed)."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (900, 420), (236, 233, 222))
    draw = ImageDraw.Draw(image)
    for n, line in enumerate(lines):
        draw.text((50, 60 + 100 * n), line, fill=(25, 25, 25),
                  font=ImageFont.load_default(size=44))
    image.save(path, quality=92)


def prepare_home(home: Path) -> None:
    """The files and folders the README's examples name, in a reader's home folder."""
    pictures = home / "Pictures"
    _shapes(pictures, 4, seed=1)  # few: describe captions every image, 0.2-0.5 s each
    for image in _shapes(pictures / "2021", 8, seed=2, size=128):  # a summer at the beach
        caption = image.with_suffix(".txt")
        caption.write_text(caption.read_text().strip() + ", on the beach\n")
        for path in (image, caption):
            os.utime(path, (JULY_2021, JULY_2021))
    _shapes(pictures / "old", 2, seed=3)
    _jpeg(pictures / "IMG_2041.jpg", 4)
    for receipt in (pictures / "receipt.jpg", home / "receipt.jpg"):  # the OCR section's
        _text_image(receipt, ["HOTEL LINDNER", "Rechnung / Invoice No. 4711", "Total 120.00 EUR"])
    _jpeg(home / "Downloads" / "cats.jpg", 5)
    _jpeg(home / "photo.jpg", 6)
    _jpeg(home / "query.jpg", 7)
    _shapes(home / "products", 24, seed=8)  # enough to hold some out
    _shapes(home / "archive", 2, seed=9)
    (home / "backups").mkdir()
    products = [{"text": "red sneakers", "id": "sku-42", "brand": "acme", "price": 39},
                {"text": "blue running shoes", "id": "sku-43", "brand": "acme", "price": 65},
                {"text": "green hiking boots", "id": "sku-44", "brand": "trailco", "price": 45}]
    (home / "products.jsonl").write_text("".join(json.dumps(p) + "\n" for p in products))
    (home / "labels.txt").write_text("circle\nstar\nsquare\ntriangle\ncross\n")
    from videos import BLUE_SQUARE, GREEN_STAR, RED_CIRCLE, Clip, write_video

    (home / "Videos").mkdir()
    write_video(home / "Videos" / "holiday.mp4", [Clip(RED_CIRCLE, 2.0), Clip(BLUE_SQUARE, 3.0),
                                                  Clip(GREEN_STAR, 2.0)], fps=12, size=(160, 120))


# -- running the blocks ---------------------------------------------------------------------------

@dataclass
class Reader:
    """A reader working through the README: what failed, what was used from the lists."""

    home: Path
    failures: list[str]
    used: set[str]
    server: ServerProcess | None = None

    def fail(self, line: int, what: str, detail: str) -> None:
        self.failures.append(f"README.md:{line}: {what}\n{detail.rstrip()}")

    def local(self, text: str) -> str:
        """The README's server address pointed at the server this test started."""
        if self.server is None:
            return text
        here = f"127.0.0.1:{self.server.port}"
        return text.replace("localhost:8000", here).replace("127.0.0.1:8000", here)


def subcommand(args: list[str]) -> str:
    rest = args[2:] if args[:1] == ["--collection"] else args
    return rest[0] if rest else ""


def run_shell_block(reader: Reader, block: Block) -> None:
    env = dict(os.environ)
    exported: dict[str, str] = {}
    for n, line in logical_lines(block):
        try:
            commands = split_commands(line, env)
        except ValueError as exc:
            reader.fail(n, line, str(exc))
            continue
        for words in commands:
            text = " ".join(words)
            skip = next((key for key, _ in NOT_RUN if text.startswith(key)), None)
            if skip is not None:
                reader.used.add(skip)
                continue
            assigned = dict(exported)
            while words and re.match(r"[A-Za-z_]\w*=", words[0]):
                name, _, value = words.pop(0).partition("=")
                assigned[name] = value
            if not words:  # NAME=value alone: a shell variable
                env.update(assigned)
            elif words[0] == "export":
                exported.update(w.partition("=")[::2] for w in words[1:])
                env.update(exported)
            elif Path(words[0]).name == "retrieval":
                run_retrieval(reader, n, words[1:], assigned)
            elif words[0] == "curl":
                run_curl(reader, n, words)
            elif words[0] in PROGRAMS:
                run_program(reader, n, words)
            else:
                reader.fail(n, text, "a program this test does not know: make the line "
                            "runnable, or list it in NOT_RUN with the reason")


def run_retrieval(reader: Reader, n: int, args: list[str], env: dict[str, str]) -> None:
    text = " ".join(["retrieval", *args])
    if subcommand(args) == "serve":
        start_server(reader, n, args, env)
        return
    proc = run_cli(*args, check=False, env=env or None)
    shown = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    allowed = [(key, needle) for key, needle, _ in ALLOWED_FAILURES if key in text]
    if allowed:
        key, needle = allowed[0]
        reader.used.add(key)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        if proc.returncode == 0:
            reader.fail(n, text, f"ran: remove it from ALLOWED_FAILURES\n{shown}")
        elif not (proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: ")
                  and needle in lines[0]):
            reader.fail(n, text, f"expected one 'Error: ...{needle}...' line\n{shown}")
    elif proc.returncode != 0:
        reader.fail(n, text, shown)
    elif subcommand(args) == "search" and not proc.stdout.strip():
        reader.fail(n, text, f"found nothing\n{shown}")


def start_server(reader: Reader, n: int, args: list[str], env: dict[str, str]) -> None:
    """``retrieval --collection COL serve [OPTIONS]`` in the background, on a free port."""
    text = " ".join(["retrieval", *args])
    if reader.server is not None or args[:1] != ["--collection"] or env:
        reader.fail(n, text, "one 'retrieval --collection COL serve' line is started, "
                    "without a port or variables; list others in NOT_RUN")
        return
    reader.server = ServerProcess(Path(args[1]), reader.home.parent / "serve.log", *args[3:])
    try:
        reader.server.wait_ready()
    except AssertionError as exc:
        reader.fail(n, text, str(exc))


def run_curl(reader: Reader, n: int, words: list[str]) -> None:
    text = " ".join(words)
    if shutil.which("curl") is None:
        print(f"README.md:{n}: not run, curl is not installed: {text}")
        return
    if reader.server is None:
        reader.fail(n, text, "no serve line before it started a server")
        return
    words = [reader.local(w) for w in words]
    proc = subprocess.run(words, cwd=reader.home, capture_output=True, timeout=120)
    out = Path(reader.home, words[words.index("-o") + 1]) if "-o" in words else None
    body = out.read_bytes() if out is not None and out.exists() else proc.stdout
    try:
        answer = json.loads(body) if body.startswith(b"{") else {}
    except ValueError:
        answer = {}
    answer = answer if isinstance(answer, dict) else {}
    searched = any(re.search(r"/search\b", w) for w in words)
    if (proc.returncode != 0 or not body or "detail" in answer
            or (searched and not answer.get("hits"))):
        reader.fail(n, text, f"exit {proc.returncode}, body {body[:300]!r}\n"
                    f"{proc.stderr.decode(errors='replace')}")


def run_program(reader: Reader, n: int, words: list[str]) -> None:
    text = " ".join(words)
    if shutil.which(words[0]) is None:
        print(f"README.md:{n}: not run, {words[0]} is not installed: {text}")
        return
    proc = subprocess.run(words, cwd=reader.home, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        reader.fail(n, text, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")


def run_python_block(reader: Reader, block: Block) -> None:
    """The block's code with ``exec`` (line numbers as in the README), output captured."""
    code = reader.local("\n" * (block.first_line - 1) + "\n".join(block.lines))
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    except Exception:
        reader.fail(block.first_line, "python block", traceback.format_exc())


# -- the tests ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_readme_examples_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    prepare_home(home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)
    # The default collection, bound to the demo model (the default cannot be downloaded here).
    run_cli("index", home / "Downloads" / "cats.jpg", "--model", "demo")
    reader = Reader(home, [], set())
    try:
        for block in readme_blocks(README.read_text(encoding="utf-8")):
            if block.not_run is not None or not block.lang:
                continue
            if block.lang == "bash":
                run_shell_block(reader, block)
            elif block.lang == "python":
                run_python_block(reader, block)
    finally:
        if reader.server is not None:
            reader.server.stop()
    listed = {key for key, *_ in (*ALLOWED_FAILURES, *NOT_RUN)}
    assert not reader.failures, (f"{len(reader.failures)} README examples failed:\n\n"
                                 + "\n\n".join(reader.failures))
    assert listed <= reader.used, f"listed but not in the README: {sorted(listed - reader.used)}"


def test_readme_blocks_are_bash_python_or_output() -> None:
    """A block in another language would be skipped silently; a not-run mark gives a reason."""
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    assert {b.lang for b in blocks} <= {"", "bash", "python"}
    assert all(b.lang for b in blocks if b.not_run is not None)


@pytest.mark.parametrize(("line", "commands"), [
    ("retrieval index ~/Pictures --json   # one JSON summary",
     [["retrieval", "index", "/h/Pictures", "--json"]]),
    ("retrieval search \"it's #1\" --where 'caption ~ *beach*'  # a comment",
     [["retrieval", "search", "it's #1", "--where", "caption ~ *beach*"]]),
    ("a --path '~/x' --model local-dir:~/m ~ x~", [["a", "--path", "~/x", "--model",
                                                  "local-dir:~/m", "/h", "x~"]]),
    ("X=1 a && b \"$HOME/k\" ''; c\\ d", [["X=1", "a"], ["b", "/h/k", ""], ["c d"]]),
])
def test_split_commands_reads_lines_as_bash(line: str, commands: list[list[str]]) -> None:
    assert split_commands(line, {"HOME": "/h"}) == commands


@pytest.mark.parametrize("line", ["a | b", "a > f", "a *.jpg", "a $(b)", "a 'b", "a $NOPE"])
def test_split_commands_refuses_what_it_cannot_read(line: str) -> None:
    with pytest.raises(ValueError):
        split_commands(line, {"HOME": "/h"})
