"""The choice of runtime (encoders/resolve.py): one ordered registry, each entry with its
reason, and one protocol every runtime's encoder follows."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from retrieval.encoders.openclip import OpenClipEncoder
from retrieval.encoders.resolve import RUNTIMES, Need, choose
from retrieval.encoders.runtime import OnnxEncoder
from retrieval.encoders.spec import Encoder


def _export() -> Any:
    return cast(Any, SimpleNamespace(ok=True))


@pytest.mark.parametrize(("need", "chosen", "why"), [
    (Need(indexing=True, cuda=True, export=_export(), precision="fp32"), "torch-cuda", "CUDA"),
    (Need(indexing=False, cuda=True, export=None, precision="fp32"), "torch-cuda", "CUDA"),
    (Need(indexing=True, cuda=False, export=None, precision="fp32", exporting=True), "torch",
     "beside"),
    (Need(indexing=True, cuda=False, export=_export(), precision="int8"), "onnx", "ONNX"),
    (Need(indexing=False, cuda=False, export=_export(), precision="fp32"), "onnx", "ONNX"),
    (Need(indexing=True, cuda=False, export=_export(), precision="fp32"), "onnx", "ONNX"),
    (Need(indexing=False, cuda=False, export=None, precision="fp32"), "torch", "no usable"),
])
def test_the_first_runtime_whose_condition_holds_serves(need: Need, chosen: str,
                                                        why: str) -> None:
    runtime = choose(need)
    assert runtime.name == chosen and why in runtime.reason


def test_every_need_has_a_runtime_and_every_runtime_a_reason() -> None:
    assert RUNTIMES[-1].when(Need(indexing=False, cuda=False, export=None, precision="fp32"))
    assert all(r.reason and r.name for r in RUNTIMES)


@pytest.mark.parametrize("encoder_class", [OnnxEncoder, OpenClipEncoder])
def test_every_runtime_follows_the_encoder_protocol(encoder_class: type) -> None:
    methods = [m for m in vars(Encoder) if m in ("embed_images", "embed_texts", "warm")]
    assert methods == ["embed_images", "embed_texts", "warm"]
    assert all(callable(getattr(encoder_class, m, None)) for m in methods)
