"""The shipped demo model: offline, small, and good enough on images it never saw."""

from __future__ import annotations

import pytest
from conftest import run_cli

from retrieval import DEFAULT_MODEL, ModelSpec, load_encoder
from retrieval.training.demo import DEMO_ARCH, DEMO_MODEL_DIR, evaluate_quality


def test_demo_model_ships_and_loads_offline():
    files = {p.name: p.stat().st_size for p in DEMO_MODEL_DIR.iterdir()}
    assert set(files) == {"open_clip_config.json", "open_clip_model.safetensors"}
    assert sum(files.values()) < 15 * 1024 * 1024
    enc = load_encoder(ModelSpec.parse("demo"), "cpu")
    side = DEMO_ARCH["vision_cfg"]["image_size"]
    assert enc.image_spec.size == (side, side)
    assert enc.dim == DEMO_ARCH["embed_dim"]
    assert enc.embed_texts(["a red circle"]).shape == (1, enc.dim)


def test_demo_model_quality_bar_on_fresh_images(tmp_path):
    """Through the engine, in English and in Chinese: >= 90% of the top 10 match one- and
    two-attribute queries, and the right colour-shape caption is chosen for >= 90% of
    images."""
    reports = evaluate_quality("demo", n=600, seed=99991, work=tmp_path,
                               languages=("en", "zh"))
    for lang, report in reports.items():
        assert report.two_attribute_precision >= 0.9, (lang, report)
        assert report.one_attribute_precision >= 0.9, (lang, report)
        assert report.image_to_text_accuracy >= 0.9, (lang, report)


@pytest.mark.slow
def test_demo_command_runs_offline_and_is_incremental(tmp_path):
    out = run_cli("demo", "--images", "60", "--folder", tmp_path / "imgs",
                  collection=tmp_path / "col").stdout
    assert "Text search: \"a red circle\"" in out and "Image to text" in out
    assert "Indexed them into" in out and "60 added" in out
    assert "Try next:" in out
    # the suggestions name today's command and default model, not their former ones
    assert " generate-captions " in out and " describe " not in out
    assert f"default model {DEFAULT_MODEL.name} " in out
    again = run_cli("demo", "--images", "60", "--folder", tmp_path / "imgs",
                    collection=tmp_path / "col").stdout
    assert "0 added, 60 unchanged, 0 embedded" in again
