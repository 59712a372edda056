"""Generated captions: the CoCa captioner (loading, generation options), ``caption --generate``,
and ``generate-captions`` over a collection (incremental, resumable, beside sidecar captions,
found by text, keyword and ``caption ~`` searches, shown by the HTTP API).

The captioner is a tiny CoCa with random weights written in open_clip's ``local-dir`` layout,
so its captions are strings of random words; the tests use the words it actually wrote."""

from __future__ import annotations

import json

import numpy as np
import pytest
from coca import write_tiny_coca
from conftest import assert_one_error_line, make_images, run_cli

from retrieval import Collection
from retrieval.encoders.captioner import load_captioner
from retrieval.encoders.generation import GenerationOptions
from retrieval.enrich.captions import GENERATED
from retrieval.errors import InputError, ModelError


@pytest.fixture(scope="module")
def coca(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"local-dir:{write_tiny_coca(tmp_path_factory.mktemp('coca') / 'tiny-coca')}"


@pytest.fixture(scope="module")
def other_coca(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"local-dir:{write_tiny_coca(tmp_path_factory.mktemp('coca2') / 'c', seed=1)}"


@pytest.fixture(scope="module")
def captioner(coca: str):
    return load_captioner(coca, device="cpu")


def _pixels(n: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_generation_types_and_options(captioner):
    px = _pixels(3)
    greedy = captioner.generate(px, GenerationOptions("top_k", seq_len=12, top_k=1))
    assert len(greedy) == 3 and all(isinstance(t, str) and t for t in greedy)
    # one beam is greedy decoding; more beams find captions at least as likely
    assert captioner.generate(px, GenerationOptions("beam_search", seq_len=12,
                                                    num_beams=1)) == greedy
    beams = captioner.generate(px, GenerationOptions(seq_len=12, num_beams=3))
    assert len(beams) == 3
    sampled = GenerationOptions("top_p", seq_len=12, top_p=0.9, seed=5)
    assert captioner.generate(px, sampled) == captioner.generate(px, sampled)  # seeded
    # seq_len above the context length is clamped; bad values are one-line errors
    long = GenerationOptions("top_k", seq_len=500, min_seq_len=3)
    assert captioner.generate(px[:1], long)
    with pytest.raises(InputError, match="generation type"):
        captioner.generate(px, GenerationOptions("nucleus"))
    with pytest.raises(InputError, match="min_seq_len"):
        captioner.generate(px, GenerationOptions(seq_len=5, min_seq_len=5))
    assert captioner.key(GenerationOptions()) != captioner.key(GenerationOptions(num_beams=2))
    # options a generation type ignores do not change what it writes
    assert captioner.key(GenerationOptions()) == captioner.key(GenerationOptions(top_p=0.5))


def test_a_model_without_decoder_is_refused(tiny_spec):
    with pytest.raises(ModelError, match="no text decoder"):
        load_captioner(tiny_spec, device="cpu")


def test_caption_generate_cli(tmp_path, coca):
    (image,) = make_images(tmp_path / "img", 1)
    out = run_cli("caption", image, "--generate", "--captioner", coca, "--seq-len", "10",
                  "--num-beams", "2")
    assert out.stdout.strip()
    js = json.loads(run_cli("caption", image, "--generate", "--captioner", coca, "--seq-len",
                            "10", "--generation-type", "top_p", "--top-p", "0.9",
                            "--json").stdout)
    assert js["captioner"] == coca and js["options"]["generation_type"] == "top_p"
    assert js["caption"]
    # no collection and no captioner named: a clear line, not a traceback
    bad = run_cli("caption", image, "--generate", check=False)
    assert bad.returncode == 1 and "no collection" in bad.stderr
    # a real CoCa whose weights are not cached: one line saying so (tests run offline)
    gone = run_cli("caption", image, "--generate", "--captioner", "coca_ViT-B-32",
                   "--captioner-pretrained", "mscoco_finetuned_laion2b_s13b_b90k", check=False)
    assert gone.returncode == 1 and "not in the local cache" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1


def test_caption_generate_without_collection_names_the_captioners(tmp_path):
    """Asked for a caption with no captioner and no collection, the user hears which
    captioners exist rather than only that there is no collection."""
    import open_clip

    from retrieval.enrich.captions import CAPTIONERS, DEMO_CAPTIONER

    (image,) = make_images(tmp_path / "img", 1)
    line = assert_one_error_line(run_cli("caption", image, "--generate", check=False),
                                 "no captioner named", f"--captioner: {DEMO_CAPTIONER}")
    coca = {(n, tags) for n, tags in open_clip.list_pretrained() if n.startswith("coca")}
    assert coca == {(n, tag) for n, tags in CAPTIONERS for tag in tags}  # open_clip's, all
    for name, tags in CAPTIONERS:
        assert f"{name} with --captioner-pretrained {' or '.join(tags)}" in line
    # an item id still needs its collection: that error is unchanged
    assert_one_error_line(run_cli("caption", "7", "--generate", check=False), "no collection")


@pytest.fixture()
def collection(tmp_path, tiny_spec):
    folder = tmp_path / "photos"
    make_images(folder, 7)
    (folder / "img001.txt").write_text("a sidecar caption about a lighthouse\n")
    col = Collection(tmp_path / "col", model=tiny_spec)
    col.index([folder], workers=0)
    yield col, folder
    col.close()


def _generated(col: Collection) -> dict[str, tuple[int, str]]:
    """image path -> (caption item id, text) of the generated captions."""
    hits = col.search(target="text", vector=[0.0] * (col.dim - 1) + [1.0], k=100)
    return {h.path: (h.id, h.text) for h in hits if h.metadata.get("source") == GENERATED}


def test_generate_captions_is_incremental_and_resumable(collection, coca, other_coca):
    col, folder = collection
    opts = GenerationOptions("top_k", seq_len=8, min_seq_len=3)
    seen: list = []

    def stop_after_first_batch(p) -> None:
        seen.append(p)
        if p.phase == "generate" and p.done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        col.generate_captions(coca, options=opts, batch_size=3, device="cpu",
                 progress=stop_after_first_batch)
    assert seen[0].total == 7 and len(_generated(col)) == 3  # the first batch is committed
    rest = col.generate_captions(coca, options=opts, batch_size=3, device="cpu",
                                 progress=seen.append)
    assert (rest.generated, rest.unchanged, rest.failed) == (4, 3, 0)
    last = [p for p in seen if p.phase == "generate"][-1]
    assert last.rate is not None and last.done == last.total == 4
    first = _generated(col)
    assert len(first) == 7
    again = col.generate_captions(coca, options=opts, device="cpu")
    assert (again.generated, again.unchanged) == (0, 7) and _generated(col) == first
    # the sidecar caption is still there, unchanged, beside the generated one
    image = col.search(image=folder / "img001.jpg", k=1)[0]
    assert image.text == "a sidecar caption about a lighthouse"
    assert image.metadata["generated_caption"] == first[str(folder / "img001.jpg")][1]
    # a changed image is captioned again, alone
    make_images(folder, 1, start=40)[0].replace(folder / "img002.jpg")
    col.index([folder], workers=0)
    changed = col.generate_captions(coca, options=opts, device="cpu")
    assert (changed.generated, changed.unchanged) == (1, 6)
    # another captioner (or other options) writes every caption again, over its own only
    assert col.generate_captions(other_coca, options=opts, device="cpu").generated == 7
    assert col.generate_captions(other_coca, options=GenerationOptions("top_k", seq_len=9),
                    device="cpu").generated == 7
    assert len(_generated(col)) == 7
    assert col.search(image=folder / "img001.jpg", k=1)[0].text.startswith("a sidecar")


def test_generated_captions_are_searchable(collection, coca, tmp_path):
    col, folder = collection
    col.generate_captions(coca, options=GenerationOptions("top_k", seq_len=8, min_seq_len=3),
             device="cpu")
    path = str(folder / "img004.jpg")
    item_id, text = _generated(col)[path]
    # by vector, as a text
    hit = col.search(text, target="text", k=1)[0]
    assert (hit.id, hit.path, hit.metadata["source"]) == (item_id, path, GENERATED)
    # by keyword: its image, through the image's keyword row
    word = max(text.split(), key=len)
    hits = col.search(word, hybrid=True, keyword_weight=1.0, k=7)
    assert path in [h.path for h in hits[:3]]
    # by filter: caption ~ glob (case-insensitive), sidecar and generated alike
    found = col.search("x", filters=[f"caption ~ *{word.upper()}*"], k=10)
    assert path in {h.path for h in found}
    assert all(word in (h.metadata.get("generated_caption") or "") or word in (h.text or "")
               for h in found)
    lighthouse = col.search("x", filters=["caption ~ *LIGHTHOUSE*"], k=10)
    assert [h.path for h in lighthouse] == [str(folder / "img001.jpg")]
    assert len(col.search("x", filters=["caption = true"], k=10)) == 7
    # the CLI shows them, and the HTTP API returns them with each hit
    out = run_cli("search", "--where", f"caption ~ *{word}*", "x", "--json",
                  collection=col.path)
    assert text in [json.loads(line)["metadata"].get("generated_caption")
                    for line in out.stdout.splitlines()]
    from fastapi.testclient import TestClient

    from retrieval.interfaces.server import create_app

    with TestClient(create_app(col)) as client:
        body = client.post("/search", json={"text": "x", "k": 7}).json()
        shown = {h["path"]: h["metadata"].get("generated_caption") for h in body["hits"]}
        assert shown[path] == text
        texts = client.post("/search", json={"text": text, "target": "text", "k": 1}).json()
        assert texts["hits"][0]["metadata"]["source"] == GENERATED


def test_generate_captions_cli_and_default_captioner(collection, coca):
    col, _ = collection
    bad = run_cli("generate-captions", collection=col.path, check=False)
    assert bad.returncode == 1 and "--captioner" in bad.stderr  # the tiny model is no CoCa
    out = run_cli("generate-captions", "--captioner", coca, "--seq-len", "8",
                  "--generation-type", "top_k", "--json", collection=col.path)
    summary = json.loads(out.stdout)
    assert (summary["generated"], summary["failed"]) == (7, 0)
    # "describe", the command's old name, still works and is not listed
    plain = run_cli("describe", "--captioner", coca, "--seq-len", "8", "--generation-type",
                    "top_k", collection=col.path)
    assert "0 captions generated" in plain.stdout and "7 up to date" in plain.stdout
    listed = run_cli("--help").stdout
    assert "generate-captions" in listed and " describe " not in listed
    assert Collection.describe is Collection.generate_captions  # the method's old name too


def test_a_coca_is_also_an_embedding_model(tmp_path, coca, captioner):
    """Its contrastive towers embed (exported to ONNX, parity-checked: searches never load
    torch), and the same model is the collection's default captioner."""
    from retrieval.encoders.runtime import OnnxEncoder

    folder = tmp_path / "photos"
    make_images(folder, 4)
    col = Collection(tmp_path / "col", model=coca)
    col.index([folder], workers=0)
    assert isinstance(col.encoder, OnnxEncoder)
    texts = ["a red circle", "two dogs on a beach at sunset"]
    np.testing.assert_allclose(col.encoder.embed_texts(texts),
                               _torch_texts(captioner, texts), atol=1e-5)
    path = str(folder / "img002.jpg")
    assert col.search(image=path, k=1)[0].path == path
    summary = col.generate_captions(options=GenerationOptions("top_k", seq_len=8),
                                device="cpu")
    assert summary.captioner == coca and summary.generated == 4
    col.close()


def _torch_texts(captioner, texts: list[str]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = captioner.model.encode_text(captioner.tokenizer(texts), normalize=True)
    return out.float().numpy()


def test_shipped_demo_captioner_on_fresh_images(tmp_path):
    """The shipped CoCa names the objects of images it never saw, offline (README, "The demo
    captioner": 0.98 of one-object and two-object images on 400; these 40 are all right)."""
    from retrieval.training.demo_captioner import evaluate_captions
    from retrieval.training.synthetic import SHAPES

    report = evaluate_captions("demo-captioner", n=40, seed=777, work=tmp_path,
                               options=GenerationOptions("top_k"))
    assert report.one_object_colour >= 0.9
    assert report.one_object_correct >= 0.8  # chance is 1/30 (six colours, five shapes)
    assert report.two_object_correct >= 0.7
    for _, text in report.examples:
        words = text.split()
        assert words[0] == "a" and set(words) & set(SHAPES), text
