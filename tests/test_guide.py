"""The model guide (retrieval/encoders/guide.py): ``retrieval model list --available`` prints it
(``--json`` too) without loading any model, every candidate holds a measurement (an export
with its costs, or the reason it stays on torch), and the default rule picks by licence, cost
and published retrieval accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import assert_one_error_line, cli_imports, json_lines, make_images, run_cli

from retrieval.encoders import DEFAULT_MODEL, ModelSpec, guide
from retrieval.interfaces.cli import cli


def test_model_list_available_prints_the_guide() -> None:
    result = CliRunner().invoke(cli, ["model", "list", "--available"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for c in guide.CANDIDATES:
        rows = [ln for ln in lines if ln.startswith(c.key + " ")]
        assert len(rows) == 2, c.key  # its costs, and its published figures and licence
        assert c.licence in rows[1]
    best, _ = guide.default_choice()
    assert lines[-2 if guide.MEASURED_ON else -1].endswith(best.key if best else
                                                           "none measured yet")


def test_model_list_available_json_has_a_row_per_candidate() -> None:
    result = CliRunner().invoke(cli, ["model", "list", "--available", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["model"] for r in rows] == [c.key for c in guide.CANDIDATES]
    for row in rows:
        assert {"imagenet", "coco_t2i", "licence", "licence_source", "any_use", "measured",
                "figures_source", "default_rule_pick"} <= set(row)
    assert sum(r["default_rule_pick"] for r in rows) == (guide.default_choice()[0] is not None)


def test_model_list_available_loads_no_model() -> None:
    modules, lines = cli_imports("model", "list", "--available",
                                 watch={"torch", "open_clip", "onnxruntime", "faiss",
                                        "sqlalchemy", "tokenizers", "transformers"})
    assert modules == []
    assert any(ln.startswith(guide.BASELINE) for ln in lines)


def test_every_candidate_is_measured_or_says_why_not() -> None:
    """The guide's table comes from one run of benchmarks/models.py over every candidate."""
    assert guide.MEASURED_ON.get("date") and guide.MEASURED_ON.get("command")
    for c in guide.CANDIDATES:
        m = guide.MEASURED.get(c.key)
        assert m is not None, f"{c.key} was not measured"
        if m["export"] == "ok":
            assert m["image_fp32_ratio"] > 0 and m["text_p50_ms"] > 0 and m["fp32_mb"] > 0
        else:
            assert m["reason"], c.key
    assert guide.MEASURED[guide.BASELINE]["image_fp32_ratio"] == 1.0


def _fake(ratio: float) -> dict[str, object]:
    return {"export": "ok", "image_fp32_ratio": ratio}


def test_the_default_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    by_key = {c.key: c for c in guide.CANDIDATES}
    measured = {k: _fake(1.0) for k in by_key}
    monkeypatch.setattr(guide, "MEASURED", measured)
    best, passed = guide.default_choice()
    # every model as cheap as ViT-B-32: the best published MSCOCO figure among any-use licences
    assert best is not None and best.any_use is True
    assert best.coco_t2i == max(c.coco_t2i or 0 for c in guide.CANDIDATES if c.any_use)
    assert all(by_key[line.split(":")[0]].any_use is not True for line in passed)
    # too costly (more than 1.5x ViT-B-32's image cost): passed over, the next best picked
    measured[best.key] = _fake(1 / 1.6)
    second, passed = guide.default_choice()
    assert second is not None and second.key != best.key
    assert any(line.startswith(f"{best.key}: image cost 1.60x") for line in passed)
    # a model that cannot be exported is never the default
    measured[second.key] = {"export": "failed", "reason": "an operator ONNX lacks"}
    third, passed = guide.default_choice()
    assert third is not None and third.key not in (best.key, second.key)
    assert any("an operator ONNX lacks" in line for line in passed)


# --- the default model --------------------------------------------------------------------------

def test_the_default_model_is_the_rules_pick() -> None:
    """DEFAULT_MODEL is what the rule picks from the guide's figures, so the two cannot drift."""
    best, passed = guide.default_choice()
    assert best is not None, passed
    assert (best.name, best.pretrained) == (DEFAULT_MODEL.name, DEFAULT_MODEL.pretrained)


def test_existing_collections_keep_their_model(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A collection made under an older default keeps its model: indexing more into it and
    searching it never reach for the new default's weights (which cannot be downloaded here).
    The demo model stands in for the old default, whose weights cannot be had here either."""
    from retrieval.interfaces.cli import group

    col = tmp_path / "col"
    monkeypatch.setattr(group, "DEFAULT_MODEL", ModelSpec("demo"))
    run_cli("index", *make_images(tmp_path / "a", 2), collection=col)  # no --model
    monkeypatch.undo()
    run_cli("index", *make_images(tmp_path / "b", 2, start=2), collection=col)
    hits = json_lines(run_cli("search", "a red circle", "--json", collection=col).stdout)
    assert len(hits) == 4
    assert json.loads(run_cli("info", "--json", collection=col).stdout)["model"]["name"] == "demo"
    # a new collection gets the new default; offline, one line names the weights it lacks
    proc = run_cli("index", tmp_path / "a", collection=tmp_path / "new", check=False)
    assert_one_error_line(proc, f"{DEFAULT_MODEL.name} ({DEFAULT_MODEL.pretrained})",
                          "not in the local cache")


def test_an_architecture_named_alone_keeps_its_default_weights() -> None:
    """--model ViT-B-32 without --pretrained still means laion2b_s34b_b79k, whatever the
    default for new collections is."""
    from retrieval.binding import with_weights

    assert with_weights(ModelSpec("ViT-B-32"), None) == ModelSpec("ViT-B-32",
                                                                  "laion2b_s34b_b79k")
    assert with_weights(ModelSpec(DEFAULT_MODEL.name), None) == DEFAULT_MODEL


# --- queries in a script the model was not trained for ------------------------------------------

def test_language_hint_names_a_multilingual_model() -> None:
    english = ModelSpec("ViT-B-32", "laion2b_s34b_b79k")
    hint = guide.language_hint(english, ["一只红色的猫"])
    other, _ = guide.default_choice(languages="many")
    assert hint is not None and "Chinese characters" in hint and str(english) in hint
    assert other is not None and f"--model {other.name} --pretrained {other.pretrained}" in hint
    assert "Cyrillic" in (guide.language_hint(english, ["a cat", "кошка"]) or "")
    assert guide.language_hint(english, ["a red cat", "un chat rouge"]) is None  # Latin script
    assert guide.language_hint(ModelSpec(other.name, other.pretrained), ["一只猫"]) is None
    assert guide.language_hint(ModelSpec("demo"), ["一只猫"]) is None  # not in the guide


@pytest.fixture()
def english_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A demo collection whose model the guide says was trained on English text only."""
    col = tmp_path / "col"
    run_cli("index", *make_images(tmp_path / "pics", 3), "--model", "demo", collection=col)
    entry = guide.Candidate("demo", None, "demo", "English", None, None, None,  # type: ignore[arg-type]
                            "openclip", "MIT", "test", True)
    monkeypatch.setattr(guide, "CANDIDATES", (*guide.CANDIDATES, entry))
    monkeypatch.setattr(guide, "_said", set())
    return col


def test_cli_says_once_which_multilingual_model_to_use(english_demo: Path) -> None:
    first = run_cli("search", "一个红色的圆形", collection=english_demo)
    lines = [ln for ln in first.stderr.splitlines() if "multilingual" in ln]
    assert len(lines) == 1 and "Chinese characters" in lines[0], first.stderr
    again = run_cli("search", "一个蓝色的正方形", collection=english_demo)  # same process
    assert "multilingual" not in again.stderr
    english = run_cli("search", "a red circle", collection=english_demo)
    assert "multilingual" not in english.stderr


def test_api_and_http_carry_the_notice(english_demo: Path) -> None:
    from fastapi.testclient import TestClient

    from retrieval import Collection
    from retrieval.interfaces.server import create_app

    with Collection(english_demo) as col:
        assert "Chinese characters" in (col.search("一个红色的圆形", k=2).notice or "")
        assert col.search("a red circle", k=2).notice is None
        client = TestClient(create_app(col))
        body = client.post("/search", json={"text": "一个红色的圆形", "k": 2}).json()
        assert "Chinese characters" in body["notice"] and len(body["hits"]) == 2
        assert client.post("/search", json={"text": "a circle", "k": 2}).json()["notice"] is None
