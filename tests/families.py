"""Tiny versions of the model families the model guide lists, written in the local-dir layout,
and stand-ins for tokenizers that cannot be downloaded here.

Each tiny model keeps what makes its family hard to export: MobileCLIP's FastViT image tower
(re-parameterisable MobileOne blocks, conditional position encoding, attention in the last
stage) and its bidirectional text tower; MobileCLIP2-B's ViT image tower and causal text tower
in a custom-text model; PE-Core's rotary-embedding EVA image tower with attention pooling;
SigLIP 2's attention-pooled ViT and its text tower (bidirectional, pooled at the last position,
projection with a bias, a Gemma-style Hugging Face tokenizer with canonicalising cleaning).
The timm towers are the real timm architectures with fewer and narrower blocks, registered
under test names. The weights are random and seeded.

``write_gemma_tokenizer`` writes a tokenizer of the kind SigLIP 2 uses (Gemma's: byte-level
fallback BPE, spaces as "▁", ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2), trained here on a few
sentences; the real Gemma tokenizer (``timm/ViT-B-16-SigLIP2``) is gated and cannot be had.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models import TINY_HF_SENTENCES, save_weights

GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]


def _register_tiny_timm_models() -> None:
    """timm's own architectures, shrunk, under names open_clip configs can use."""
    import timm
    from timm.models import register_model
    from timm.models.eva import vit_pe_core_small_patch16_384
    from timm.models.fastvit import fastvit_mci0
    from timm.models.vision_transformer import vit_base_patch16_siglip_224
    from timm.models.vision_transformer_hybrid import vit_base_mci_224

    def tiny_mci(pretrained: bool = False, **kw: Any) -> Any:
        return fastvit_mci0(pretrained=False, layers=(1, 1, 1, 1), embed_dims=(8, 16, 32, 64),
                            **kw)

    def tiny_vit_mci(pretrained: bool = False, **kw: Any) -> Any:
        # its convolutional stem is fixed at 768 channels: one block of full width
        return vit_base_mci_224(pretrained=False, depth=1, img_size=32, **kw)

    def tiny_pe_core(pretrained: bool = False, **kw: Any) -> Any:
        return vit_pe_core_small_patch16_384(pretrained=False, depth=1, embed_dim=32,
                                             num_heads=2, ref_feat_shape=(4, 4),
                                             attn_pool_num_heads=2, img_size=64, **kw)

    def tiny_siglip(pretrained: bool = False, **kw: Any) -> Any:
        return vit_base_patch16_siglip_224(pretrained=False, depth=1, embed_dim=32,
                                           num_heads=2, act_layer="gelu_tanh", img_size=32,
                                           **kw)

    for fn, name in ((tiny_mci, "test_tiny_mci"), (tiny_vit_mci, "test_tiny_vit_mci"),
                     (tiny_pe_core, "test_tiny_pe_core"), (tiny_siglip, "test_tiny_siglip")):
        if name not in timm.list_models(name):
            fn.__name__ = name
            fn.__module__ = __name__
            register_model(fn)


_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
FAMILIES: dict[str, dict[str, Any]] = {
    "mobileclip": {"embed_dim": 16, "custom_text": True, "vision_cfg": {
        "timm_model_name": "test_tiny_mci", "timm_model_pretrained": False, "timm_pool": "avg",
        "timm_proj": None, "image_size": 64}, "text_cfg": {**_TEXT, "no_causal_mask": True}},
    "mobileclip2-b": {"embed_dim": 16, "custom_text": True, "vision_cfg": {
        "timm_model_name": "test_tiny_vit_mci", "timm_model_pretrained": False,
        "timm_pool": "token", "timm_proj": None, "image_size": 32},
        "text_cfg": {**_TEXT, "no_causal_mask": False}},
    "pe-core": {"embed_dim": 16, "custom_text": True, "vision_cfg": {
        "timm_model_name": "test_tiny_pe_core", "timm_model_pretrained": False,
        "timm_pool": "map", "timm_proj": None, "image_size": 64}, "text_cfg": dict(_TEXT)},
    "siglip2": {"embed_dim": 32, "custom_text": True, "init_logit_bias": -10, "vision_cfg": {
        "timm_model_name": "test_tiny_siglip", "timm_model_pretrained": False,
        "timm_pool": "map", "timm_proj": "none", "image_size": 32},
        # vocab_size and hf_tokenizer_name are filled in from the stand-in tokenizer
        "text_cfg": {"context_length": 16, "tokenizer_kwargs": {"clean": "canonicalize"},
                     "width": 32, "heads": 2, "layers": 1, "no_causal_mask": True,
                     "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6},
                     "act_kwargs": {"approximate": "tanh"}}},
}
SIGLIP_PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                     "interpolation": "bicubic", "resize_mode": "squash"}


def write_gemma_tokenizer(folder: Path, **config: Any) -> Path:
    """``tokenizer.json`` (a BPE with byte fallback, Gemma's special tokens and ids, ``<bos>``
    before each text) and ``tokenizer_config.json`` naming ``GemmaTokenizer``, updated with
    ``config`` (``padding_side``, ``truncation_side``, ...)."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator(TINY_HF_SENTENCES * 3, trainers.BpeTrainer(
        vocab_size=600, special_tokens=GEMMA_SPECIALS + bytes_))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A",
                                                       special_tokens=[("<bos>", 2)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>",
        "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>",
        "model_max_length": 64, **config}))
    return folder


def tiny_family_config(family: str, folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model_cfg, preprocess_cfg) of a tiny family; SigLIP 2's tokenizer is written into
    ``folder``."""
    cfg = json.loads(json.dumps(FAMILIES[family]))
    preprocess: dict[str, Any] = {"mean": [0.48145466, 0.4578275, 0.40821073],
                                  "std": [0.26862954, 0.26130258, 0.27577711]}
    if family == "siglip2":
        from tokenizers import Tokenizer

        write_gemma_tokenizer(folder)
        vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size()
        cfg["text_cfg"].update(vocab_size=vocab, hf_tokenizer_name=str(folder))
        preprocess = dict(SIGLIP_PREPROCESS)
    return cfg, preprocess


def write_family_model(folder: Path, family: str, *, seed: int = 0) -> Path:
    """A tiny model of ``family`` as an open_clip local-dir folder."""
    import open_clip
    import torch

    _register_tiny_timm_models()
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    cfg, preprocess = tiny_family_config(family, folder)
    torch.manual_seed(seed)
    model = open_clip.CustomTextCLIP(**{k: v for k, v in cfg.items() if k != "custom_text"})
    save_weights(folder, model)
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg, "preprocess_cfg": preprocess}))
    return folder
