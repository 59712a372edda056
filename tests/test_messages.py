"""Messages a new user meets (issue 20, item 4), each compared as whole lines through click's
``CliRunner``: a model that is neither cached nor downloadable, ``remove`` of a path the
collection does not hold, ``serve`` on a port in use, ``--pretrained`` beside a model that
carries its own weights, ``train`` on too few images to judge, counts with their nouns, and
image-to-text answers that repeat one text."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_one_error_line, json_lines, make_image, make_images, run_cli
from models import TINY_CONFIG

from retrieval.errors import InputError
from retrieval.search import Hit

pytestmark = pytest.mark.slow

DEMO_FIX = "or try --model demo"


def error_line(proc: Any) -> str:
    return assert_one_error_line(proc)


@pytest.fixture()
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, for huggingface_hub in this process and for messages."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture()
def indexed(tmp_path: Path, tiny_spec: str) -> Path:
    pics = tmp_path / "pics"
    make_images(pics, 2)
    make_images(pics / "sub", 2, start=2)
    col = tmp_path / "col"
    run_cli("index", pics, "--model", tiny_spec, collection=col)
    return col


# --- models that are neither cached nor downloadable -------------------------------------------

def test_hf_hub_model_offline(tmp_path: Path, hf_cache: Path) -> None:
    make_images(tmp_path / "pics", 1)
    proc = run_cli("index", tmp_path / "pics", "--model", "hf-hub:example/absent",
                   collection=tmp_path / "col", check=False)
    assert error_line(proc) == (
        f"Error: hf-hub:example/absent is not in the local Hugging Face cache ({hf_cache}) "
        "and cannot be downloaded: offline mode is on (HF_HUB_OFFLINE is set); unset "
        "HF_HUB_OFFLINE and run once with network access to cache it, use a copy of its "
        f"files with --model local-dir:FOLDER, {DEMO_FIX}")
    assert not (tmp_path / "col").exists()


def test_hf_hub_model_on_a_machine_without_network(tmp_path: Path, hf_cache: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from retrieval.encoders import openclip

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(openclip, "hub_reachable", lambda: False)  # as when offline
    make_images(tmp_path / "pics", 1)
    proc = run_cli("index", tmp_path / "pics", "--model", "hf-hub:example/absent",
                   collection=tmp_path / "col", check=False)
    assert error_line(proc) == (
        f"Error: hf-hub:example/absent is not in the local Hugging Face cache ({hf_cache}) "
        "and cannot be downloaded: huggingface.co cannot be reached from this machine "
        "(offline); run once with network access to cache it, use a copy of its files with "
        f"--model local-dir:FOLDER, {DEMO_FIX}")


def test_pretrained_tag_offline(tmp_path: Path, hf_cache: Path) -> None:
    make_images(tmp_path / "pics", 1)
    proc = run_cli("index", tmp_path / "pics", "--model", "ViT-B-32",
                   collection=tmp_path / "col", check=False)
    line = error_line(proc)
    assert line == (
        f"Error: weights of model ViT-B-32 (laion2b_s34b_b79k) are not in the local cache "
        f"({hf_cache}) and cannot be downloaded from laion/CLIP-ViT-B-32-laion2B-s34B-b79K: "
        "offline mode is on (HF_HUB_OFFLINE is set); unset HF_HUB_OFFLINE and run once "
        "with network access to cache them, pass a checkpoint file with --pretrained FILE, "
        f"{DEMO_FIX}")
    assert "[" not in line and "Error]" not in line and "FileNotFound" not in line


def test_captioner_offline_names_the_captioner_options(tmp_path: Path, hf_cache: Path) -> None:
    (image,) = make_images(tmp_path / "img", 1)
    proc = run_cli("caption", image, "--generate", "--captioner", "coca_ViT-B-32",
                   "--captioner-pretrained", "mscoco_finetuned_laion2b_s13b_b90k",
                   collection=tmp_path / "col", check=False)
    line = error_line(proc)
    assert line.startswith("Error: weights of model coca_ViT-B-32 "
                           "(mscoco_finetuned_laion2b_s13b_b90k) are not in the local cache")
    assert line.endswith("pass a checkpoint file with --captioner-pretrained FILE, or try "
                         "--captioner demo-captioner"), line


# --- --pretrained beside a model that carries its own weights ----------------------------------

@pytest.mark.parametrize("model", ["demo", "hf-hub:example/tiny-clip", "local-dir:LOCAL"])
def test_pretrained_beside_a_model_with_weights_is_refused(tmp_path: Path, tiny_model: Path,
                                                           model: str) -> None:
    model = model.replace("LOCAL", str(tiny_model))
    make_images(tmp_path / "pics", 1)
    proc = run_cli("index", tmp_path / "pics", "--model", model, "--pretrained",
                   "laion2b_s34b_b79k", collection=tmp_path / "col", check=False)
    assert error_line(proc) == (
        f"Error: --pretrained does not apply to model {model}, which carries its own "
        "weights; drop --pretrained (it picks the weights of an open_clip architecture, as "
        "in --model ViT-B-32 --pretrained laion2b_s34b_b79k)")
    assert not (tmp_path / "col").exists()


def test_pretrained_beside_demo_on_a_search(indexed: Path) -> None:
    proc = run_cli("search", "red", "--model", "demo", "--pretrained", "x", collection=indexed,
                   check=False)
    assert error_line(proc).startswith("Error: --pretrained does not apply to model demo")
    from retrieval import Collection

    with pytest.raises(InputError, match="carries its own weights"):
        Collection(indexed, model="demo", pretrained="laion2b_s34b_b79k")


# --- remove --------------------------------------------------------------------------------------

def test_remove_a_path_the_collection_does_not_hold(indexed: Path) -> None:
    pics = indexed.parent / "pics"
    elsewhere = make_images(indexed.parent / "elsewhere", 1)[0]  # on disk, never indexed
    for path in (pics / "does-not-exist", elsewhere, indexed.parent / "elsewhere"):
        proc = run_cli("remove", path, collection=indexed, check=False)
        assert error_line(proc) == (f"Error: nothing in the collection is at or under {path}; "
                                    f"indexed files and folders: {pics}")
        assert proc.stdout == ""
    # one path it does not hold among others: nothing is removed
    proc = run_cli("remove", pics / "sub", pics / "nope.jpg", collection=indexed, check=False)
    assert error_line(proc).startswith(f"Error: nothing in the collection is at or under "
                                       f"{pics / 'nope.jpg'};")
    info = json.loads(run_cli("info", "--json", collection=indexed).stdout)
    assert info["counts"]["image"] == 4
    assert run_cli("remove", pics / "sub", collection=indexed).stdout == "2 removed\n"


# --- serve ---------------------------------------------------------------------------------------

def test_serve_on_a_port_in_use(indexed: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli("serve", "--port", port, collection=indexed, check=False)
    assert error_line(proc) == (f"Error: port {port} on 127.0.0.1 is in use; choose another "
                                "with --port")
    assert proc.stdout == ""  # nothing announced


# --- train ---------------------------------------------------------------------------------------

def test_train_says_what_it_held_out_and_that_it_is_too_few(tmp_path: Path) -> None:
    from retrieval.training.synthetic import write_dataset

    write_dataset(tmp_path / "shapes", 24, seed=3, size=32)
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    proc = run_cli("train", tmp_path / "shapes", "--out", tmp_path / "out", "--model",
                   tmp_path / "tiny.json", "--from-scratch", "--epochs", "1", "--batch-size",
                   "8", "--lr", "1e-3", "--workers", "0", "--no-progress")
    lines = proc.stdout.splitlines()
    assert lines[1] == "trained on 22 images; held out 2 of 24 to measure it"
    assert lines[2].startswith("held-out recall (mean of recall@1/5/10, both ways): ")
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("Warning")]
    assert warnings == [
        "Warning: 2 held-out images are too few to judge the model (a random ranking would "
        "score 0.83 on them; 30 or more are needed): add images or raise --val-fraction"]


def test_chance_recall_and_the_threshold() -> None:
    from retrieval.training import TrainResult
    from retrieval.training.tuning import MIN_HELD_OUT, chance_recall

    assert chance_recall(2) == pytest.approx((0.5 + 1 + 1) / 3)
    assert chance_recall(MIN_HELD_OUT) < 0.2 < chance_recall(MIN_HELD_OUT - 5)
    assert TrainResult(Path("x"), "m", val_images=29).too_few_held_out
    assert not TrainResult(Path("x"), "m", val_images=30).too_few_held_out


# --- counts with their nouns ---------------------------------------------------------------------

def test_model_list_counts_exports(tmp_path: Path, tiny_spec: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "exports"
    monkeypatch.setenv("RETRIEVAL_EXPORTS", str(root))
    assert run_cli("model", "list").stderr == f"0 exports in {root}\n"
    make_images(tmp_path / "pics", 1)
    run_cli("index", tmp_path / "pics", "--model", tiny_spec, collection=tmp_path / "col")
    assert run_cli("model", "list").stderr == f"1 export in {root}\n"


def test_counted() -> None:
    from retrieval.interfaces.cli.output import counted

    assert [counted(n, "export") for n in (0, 1, 2)] == ["0 exports", "1 export", "2 exports"]
    assert counted(1, "held-out image") == "1 held-out image"


# --- image to text: each text once ---------------------------------------------------------------

def test_distinct_texts_keeps_the_best_of_each_text() -> None:
    from retrieval.search.distinct import distinct_texts

    hits = [Hit(1, 0.9, "text", text="a red circle"), Hit(2, 0.8, "text", text="a red  Circle"),
            Hit(3, 0.7, "text", text="a blue square"), Hit(4, 0.6, "text", text="a red circle")]
    kept = distinct_texts(hits)
    assert [h.id for h in kept] == [1, 3]
    assert kept[0].metadata["duplicates"] == [2, 4] and "duplicates" not in kept[1].metadata


def test_caption_lists_each_text_once(tmp_path: Path, tiny_spec: str) -> None:
    """A sidecar caption that is also a text of the corpus, and a look-alike image with the
    same caption, were listed as three answers."""
    pics = tmp_path / "pics"
    for name in ("red", "twin"):
        make_image(pics / f"{name}.jpg", seed=40)
        (pics / f"{name}.txt").write_text("a red circle\n")
    make_images(pics, 2)
    col = tmp_path / "col"
    run_cli("index", pics, "--model", tiny_spec, collection=col)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a red circle\na blue square\na green tree\n")
    run_cli("add-texts", corpus, collection=col)
    everything = json_lines(run_cli("search", "--image", pics / "red.jpg", "--target", "text",
                                    "-k", "10", "--json", collection=col).stdout)
    assert [h["text"] for h in everything].count("a red circle") == 3
    hits = json_lines(run_cli("caption", pics / "red.jpg", "-k", "3", "--json",
                              collection=col).stdout)
    assert sorted(h["text"] for h in hits) == ["a blue square", "a green tree", "a red circle"]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    red = next(h for h in hits if h["text"] == "a red circle")
    same = [h["id"] for h in everything if h["text"] == "a red circle"]
    assert [red["id"], *red["metadata"]["duplicates"]] == same  # the best one kept


def test_an_install_without_torch_says_what_is_missing(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The smallest install (ONNX Runtime, no torch) searches and indexes with exports made
    elsewhere; a model without an export here is one line naming torch, not a traceback."""
    import sys

    monkeypatch.setenv("RETRIEVAL_EXPORTS", str(tmp_path / "no-exports"))
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails, as when not installed
    proc = run_cli("index", *make_images(tmp_path / "pics", 1), "--model", "demo",
                   collection=tmp_path / "col", check=False)
    assert_one_error_line(proc, "model demo needs torch", "torch package is not installed",
                          "$RETRIEVAL_EXPORTS")


def test_a_missing_hf_tokenizer_is_named(hf_cache: Path) -> None:
    """SigLIP 2 (the default model) loads its weights, then Gemma's tokenizer from its own Hub
    repository: offline without it (weights passed as a file, say), the line names the
    tokenizer's repository rather than transformers' general 'couldn't connect'. (Loading
    the real model to get there takes a 1.5 GB checkpoint, so the error is handed over as
    transformers raises it.)"""
    from retrieval.encoders.openclip import _load_error
    from retrieval.encoders.spec import ModelSpec

    exc = OSError("We couldn't connect to 'https://huggingface.co' to load the files, and "
                  "couldn't find them in the cached files.")
    err = _load_error(ModelSpec("ViT-B-32-SigLIP2-256", "webli"), exc, online=False)
    assert str(err).startswith("the tokenizer of model ViT-B-32-SigLIP2-256 (webli) "
                               "(timm/ViT-B-32-SigLIP2-256) is not in the local Hugging Face "
                               f"cache ({hf_cache})"), err
