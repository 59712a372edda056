"""Models with Hugging Face text towers (open_clip's multilingual models: XLM-RoBERTa, NLLB),
on a tiny XLM-RoBERTa tower written to disk in the real layouts: a ``local-dir:`` folder, an
``hf-hub:`` repository and a Hub-named text tower in the Hugging Face cache (offline), a
built-in architecture name plus a checkpoint file. Each is indexed and searched through
``Collection`` or the CLI, so open_clip's and transformers' real loading code runs, then the
ONNX export serves searches without torch or transformers.

Needs the ``multilingual`` extra (transformers); without it these tests are skipped, unless
``RETRIEVAL_REQUIRE_MULTILINGUAL=1`` (CI), where they fail. The tests of what a user sees
without the extra run everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_one_error_line, cli_imports, json_lines, make_images, run_cli
from models import (
    TINY_HF_CONFIG,
    write_hf_cache_repo,
    write_tiny_hf_model,
    write_tiny_nllb_model,
)

from retrieval import Collection, ModelSpec, load_encoder

TEXTS = ["一只猫在沙发上睡觉", "一只狗在草地上", "街道上的一只船和自行车", "a red bicycle",
         "日本の桜", "자전거를 탄 사람", "une photo d'un chat", ""]


def _require_multilingual() -> None:
    try:
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        problem = "transformers is not installed (pip install -e '.[multilingual]')"
        if os.environ.get("RETRIEVAL_REQUIRE_MULTILINGUAL") == "1":
            pytest.fail(f"{problem}, and RETRIEVAL_REQUIRE_MULTILINGUAL=1")
        pytest.skip(problem)


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-contained local-dir folder: the tower's config.json and tokenizer beside the
    open_clip config and weights."""
    _require_multilingual()
    return write_tiny_hf_model(tmp_path_factory.mktemp("models") / "tiny-xlmr")


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory, hf_model: Path) -> Path:
    """A Hugging Face cache holding the text tower as its own repository (``test/tiny-xlmr``,
    as ``xlm-roberta-base`` is for the real models) and an open_clip repository naming it
    (``test/tiny-xlmr-clip``, as ``laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k``)."""
    cache = tmp_path_factory.mktemp("hf-cache")
    tower = {f: hf_model / f for f in ("config.json", "tokenizer.json", "tokenizer_config.json")}
    write_hf_cache_repo(cache, "test/tiny-xlmr", tower)
    clip = tmp_path_factory.mktemp("clip-repo")
    write_tiny_hf_model(clip, text_tower="test/tiny-xlmr")
    write_hf_cache_repo(cache, "test/tiny-xlmr-clip", {
        "open_clip_config.json": clip / "open_clip_config.json",
        "open_clip_model.safetensors": clip / "open_clip_model.safetensors"})
    return cache


@pytest.fixture
def use_cache(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point huggingface_hub (in this process and in subprocesses) at ``hf_cache``."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(hf_cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_cache))
    return hf_cache


def test_local_dir_model_indexes_searches_and_exports(tmp_path: Path, hf_model: Path) -> None:
    spec = f"local-dir:{hf_model}"
    make_images(tmp_path / "imgs", 5)
    col = Collection(tmp_path / "c", model=spec)
    col.index([tmp_path / "imgs"], workers=0)
    col.add_texts(TEXTS)
    hits = col.search("一只猫在沙发上睡觉", target="texts", k=3)
    assert hits[0].text == "一只猫在沙发上睡觉" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(col.search("猫", target="images", k=5)) == 5
    col.close()

    # The export: parity with torch, token ids equal, and the padding cut per batch.
    from retrieval.encoders.export import MAX_ABS_DIFF, MIN_COSINE, export_model
    from retrieval.encoders.runtime import OnnxEncoder
    from retrieval.encoders.tokenizer import HFTokenizer

    torch_encoder = load_encoder(ModelSpec.parse(spec), "cpu")
    export = export_model(torch_encoder)
    assert export.ok, export.reason
    parity = export.manifest["parity"]
    assert parity["text"]["min_cos"] >= MIN_COSINE and parity["text"]["max_abs"] <= MAX_ABS_DIFF
    assert export.manifest["text"]["trim"] is True
    onnx = OnnxEncoder(export)
    texts = [*TEXTS, "猫 " * 60]
    got, want = onnx.embed_texts(texts), torch_encoder.embed_texts(texts)
    assert np.abs(got - want).max() <= MAX_ABS_DIFF
    alone = np.stack([onnx.embed_texts([t])[0] for t in texts])
    np.testing.assert_allclose(alone, got, atol=1e-5)
    ours = onnx.tokenize(["一只猫"])
    assert isinstance(onnx._tokenizer, HFTokenizer)
    assert ours.shape[1] < TINY_HF_CONFIG["text_cfg"]["context_length"]
    reference = torch_encoder.loaded.tokenizer(["一只猫"]).numpy()
    assert np.array_equal(ours, reference[:, :ours.shape[1]])
    assert (reference[:, ours.shape[1]:] == 1).all()  # only XLM-R's padding (id 1) was cut
    pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(onnx.embed_images(pixels), torch_encoder.embed_images(pixels),
                               atol=MAX_ABS_DIFF)


def test_a_folder_naming_its_tower_relative_to_itself_can_move(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``"hf_model_name": "."``: the tower is found in the model's folder wherever it is, and
    the model's identity holds no path."""
    _require_multilingual()
    from retrieval.encoders.export import encoder_identity

    moved = write_tiny_hf_model(tmp_path / "first", text_tower=".").rename(tmp_path / "moved")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # open_clip alone would look for "." here
    encoder = load_encoder(ModelSpec.parse(f"local-dir:{moved}"), "cpu")
    again = write_tiny_hf_model(tmp_path / "again", text_tower=".")
    assert encoder_identity(encoder) == encoder_identity(
        load_encoder(ModelSpec.parse(f"local-dir:{again}"), "cpu"))
    hits = Collection(tmp_path / "c2", model=f"local-dir:{moved}")
    hits.add_texts(TEXTS)
    assert hits.search("日本の桜", target="texts", k=1)[0].text == "日本の桜"
    hits.close()


def test_nllb_texts_carry_the_language_of_their_script(tmp_path: Path) -> None:
    """NLLB reads a language code before the text: each text gets its script's code, the same
    in torch and in the ONNX export's tokenizer (the parity check compares the ids)."""
    _require_multilingual()
    from retrieval.encoders.export import MAX_ABS_DIFF, export_model
    from retrieval.encoders.hf_text import LanguageTokenizer
    from retrieval.encoders.runtime import OnnxEncoder

    spec = f"local-dir:{write_tiny_nllb_model(tmp_path / 'nllb')}"
    torch_encoder = load_encoder(ModelSpec.parse(spec), "cpu")
    tokenizer = torch_encoder.loaded.tokenizer
    assert isinstance(tokenizer, LanguageTokenizer)
    hf = tokenizer.tokenizer.tokenizer
    texts = ["a cat", "一只猫在沙发上睡觉", "日本の桜", "자전거를 탄 사람", "кошка", "",
             "猫 and cat"]
    first = hf.convert_ids_to_tokens(tokenizer(texts)[:, 0].tolist())
    assert first == ["eng_Latn", "zho_Hans", "jpn_Jpan", "kor_Hang", "rus_Cyrl", "eng_Latn",
                     "zho_Hans"]
    assert hf.src_lang == "eng_Latn"  # left as it was
    export = export_model(torch_encoder)
    assert export.ok, export.reason
    assert export.manifest["text"]["trim"] is True  # the first position is read: cut is exact
    onnx = OnnxEncoder(export)
    assert np.array_equal(onnx.tokenize(texts), tokenizer(texts).numpy()[:, :onnx.tokenize(
        texts).shape[1]])
    np.testing.assert_allclose(onnx.embed_texts(texts), torch_encoder.embed_texts(texts),
                               atol=MAX_ABS_DIFF)
    col = Collection(tmp_path / "c", model=spec)
    col.add_texts(texts[:5])
    assert col.search("一只猫在沙发上睡觉", target="texts", k=1)[0].text == "一只猫在沙发上睡觉"
    col.close()


def test_search_after_export_imports_neither_torch_nor_transformers(tmp_path: Path,
                                                                    hf_model: Path) -> None:
    col = tmp_path / "c"
    run_cli("add-texts", "--model", f"local-dir:{hf_model}", _lines(tmp_path, TEXTS),
            collection=col)
    modules, lines = cli_imports(
        "--collection", col, "search", "自行车", "--target", "texts", "--hybrid", "--json",
        watch={"torch", "open_clip", "transformers", "tokenizers", "onnxruntime"})
    assert modules == ["onnxruntime", "tokenizers"]
    hits = [json.loads(ln) for ln in lines if ln.startswith("{")]
    assert hits[0]["text"] == "街道上的一只船和自行车"  # the only text with that word (keyword)


def test_hf_hub_repository_and_hub_named_tower_from_the_cache(tmp_path: Path,
                                                              use_cache: Path) -> None:
    """The real models' layout: the open_clip repository names its text tower by Hub id
    (``xlm-roberta-base``); both come from the Hugging Face cache, offline."""
    spec = "hf-hub:test/tiny-xlmr-clip"
    col = tmp_path / "c"
    run_cli("add-texts", "--model", spec, _lines(tmp_path, TEXTS), collection=col)
    hits = json_lines(run_cli("search", "日本の桜", "--target", "texts", "--json", "-k", "2",
                              collection=col).stdout)
    assert hits[0]["text"] == "日本の桜"
    info = json.loads(run_cli("info", "--json", collection=col).stdout)
    assert info["model"]["name"] == spec

    # A local-dir folder of the same repository (open_clip reads the tokenizer from it)
    folder = tmp_path / "repo"
    snapshot = next((use_cache / "models--test--tiny-xlmr-clip" / "snapshots").iterdir())
    folder.mkdir()
    for f in (*snapshot.iterdir(), *(use_cache / "models--test--tiny-xlmr" / "snapshots" /
                                     snapshot.name).iterdir()):
        if f.name != "config.json":  # the tower's config comes from the cache
            (folder / f.name).write_bytes(f.read_bytes())
    local = Collection(tmp_path / "c2", model=f"local-dir:{folder}")
    local.add_texts(TEXTS)
    assert local.search("日本の桜", target="texts", k=1)[0].score == pytest.approx(
        hits[0]["score"], abs=1e-5)
    local.close()


def test_builtin_name_with_a_checkpoint_file(tmp_path: Path, use_cache: Path) -> None:
    """An architecture name with a Hugging Face tower (as ``xlm-roberta-base-ViT-B-32``) plus
    a checkpoint file, the tower found in the cache by Hub id."""
    import open_clip

    snapshot = next((use_cache / "models--test--tiny-xlmr-clip" / "snapshots").iterdir())
    doc = json.loads((snapshot / "open_clip_config.json").read_text())
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "tiny-xlmr-ViT-test.json").write_text(json.dumps(doc["model_cfg"]))
    open_clip.add_model_config(configs)
    col = tmp_path / "c"
    checkpoint = snapshot / "open_clip_model.safetensors"
    run_cli("add-texts", "--model", "tiny-xlmr-ViT-test", "--pretrained", checkpoint,
            _lines(tmp_path, TEXTS), collection=col)
    hits = json_lines(run_cli("search", "자전거를 탄 사람", "--target", "texts", "--json",
                              collection=col).stdout)
    assert hits[0]["text"] == "자전거를 탄 사람"


def test_text_tower_missing_from_the_cache_is_one_line(tmp_path: Path, use_cache: Path,
                                                       hf_model: Path) -> None:
    folder = tmp_path / "m"
    write_tiny_hf_model(folder, text_tower="test/not-downloaded")
    proc = run_cli("add-texts", "--model", f"local-dir:{folder}", _lines(tmp_path, TEXTS),
                   collection=tmp_path / "c", check=False)
    assert_one_error_line(proc, "text tower", "test/not-downloaded",
                          "not in the local Hugging Face cache", "offline")
    write_hf_cache_repo(use_cache, "test/orphan-clip", {
        f: folder / f for f in ("open_clip_config.json", "open_clip_model.safetensors")})
    proc = run_cli("add-texts", "--model", "hf-hub:test/orphan-clip", _lines(tmp_path, TEXTS),
                   collection=tmp_path / "c2", check=False)
    assert_one_error_line(proc, "text tower of model hf-hub:test/orphan-clip",
                          "test/not-downloaded", "not in the local Hugging Face cache")


# --- without the extra, and names that cannot be had: one line each (no transformers needed) ---

def _lines(folder: Path, texts: list[str]) -> Path:
    path = folder / "texts.txt"
    path.write_text("\n".join(t for t in texts if t) + "\n", encoding="utf-8")
    return path


WITHOUT_TRANSFORMERS = """
import json, sys, traceback
sys.modules["transformers"] = None  # as if it were not installed
from click.testing import CliRunner
from retrieval.interfaces.cli import cli
results = []
for argv in json.loads(sys.argv[1]):
    r = CliRunner().invoke(cli, argv, prog_name="retrieval")
    err = r.stderr
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        err += "Traceback (most recent call last):\\n" + "".join(
            traceback.format_exception(*r.exc_info))
    results.append([r.exit_code, r.stdout, err])
print(json.dumps(results))
"""
MODELS_NEEDING_TRANSFORMERS = {
    "xlm-roberta": ["xlm-roberta-base-ViT-B-32", "--pretrained", "laion5b_s13b_b90k"],
    "nllb": ["nllb-clip-base", "--pretrained", "v1"],
    "local-dir": None,  # checked from its config, before any weights are read
}


@pytest.fixture(scope="module")
def without_transformers(tmp_path_factory: pytest.TempPathFactory
                         ) -> dict[str, tuple[list[str], subprocess.CompletedProcess[str]]]:
    """``add-texts`` with each model in one fresh Python process where transformers cannot be
    imported (one process for all: each command runs there through click's CliRunner):
    {name: (the model arguments, the command's exit code and output)}."""
    tmp = tmp_path_factory.mktemp("without-transformers")
    folder = tmp / "m"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
        **TINY_HF_CONFIG, "text_cfg": {"hf_model_name": "xlm-roberta-base"}}}))
    (folder / "open_clip_model.safetensors").write_bytes(b"")
    texts = str(_lines(tmp, TEXTS))
    models = {name: model or ["local-dir:" + str(folder)]
              for name, model in MODELS_NEEDING_TRANSFORMERS.items()}
    runs = [["--collection", str(tmp / f"c-{name}"), "add-texts", "--model", *model, texts]
            for name, model in models.items()]
    proc = subprocess.run([sys.executable, "-c", WITHOUT_TRANSFORMERS, json.dumps(runs)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.splitlines()[-1])
    return {name: (model, subprocess.CompletedProcess(run, *result))
            for (name, model), run, result in zip(models.items(), runs, results, strict=True)}


@pytest.mark.parametrize("name", sorted(MODELS_NEEDING_TRANSFORMERS))
def test_without_transformers_one_line_names_the_extra(without_transformers: Any, name: str
                                                       ) -> None:
    model, proc = without_transformers[name]
    line = assert_one_error_line(proc, "Hugging Face text tower", "transformers",
                                 "pip install 'retrieval[multilingual]'")
    assert model[0] in line


@pytest.mark.parametrize("model, needles", [
    (["xlm-roberta-base-ViT-B-32", "--pretrained", "laion5b_s13b_b90k"],
     ["laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k", "not in the local cache"]),
    (["xlm-roberta-large-ViT-H-14", "--pretrained", "laion5b_s13b_b90k"],
     ["unknown pretrained tag", "frozen_laion5b_s13b_b90k"]),
    (["nllb-clip-large-siglip", "--pretrained", "v1"], ["visheratin/nllb-clip-large-siglip"]),
    (["xlm-roberta-base-ViT-B-99"], ["unknown model", "not an open_clip architecture"]),
    (["hf-hub:laion/no-such-multilingual-repo"], ["not in the local Hugging Face cache"]),
])
def test_multilingual_names_that_cannot_be_had_are_one_line(tmp_path: Path, model: list[str],
                                                            needles: list[str]) -> None:
    _require_multilingual()  # else the missing extra is the line
    proc = run_cli("add-texts", "--model", *model, _lines(tmp_path, TEXTS),
                   collection=tmp_path / "c", check=False)
    assert_one_error_line(proc, *needles)
