"""Small open_clip architectures defined by this project's tests, written in real layouts.

The weights are random but deterministic (seeded), and they are saved exactly as open_clip
expects them on disk, so every test exercises the real loading code (``local-dir:``, a
checkpoint file next to a built-in config name) rather than an in-memory shortcut.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32,
                   "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2,
                 "layers": 2},
}


def save_weights(folder: Path, model: Any) -> None:
    """A model's weights as ``open_clip_model.safetensors`` (the local-dir layout)."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))


def write_config(folder: Path, cfg: dict[str, Any]) -> None:
    """``open_clip_config.json`` with OpenAI's preprocessing, beside the weights."""
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                           "std": [0.26862954, 0.26130258, 0.27577711]},
    }))


def write_tiny_model(folder: Path, *, seed: int = 0, fmt: str = "bin",
                     config: dict[str, Any] | None = None) -> Path:
    """Write an open_clip ``local-dir`` model (open_clip_config.json + weights) to ``folder``."""
    import open_clip
    import torch

    cfg = json.loads(json.dumps(config or TINY_CONFIG))
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    if fmt == "safetensors":
        save_weights(folder, model)
    else:
        torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    write_config(folder, cfg)
    return folder


# --- a tiny multilingual model: open_clip with a Hugging Face (XLM-RoBERTa) text tower ---------

TINY_HF_CONTEXT = 24
TINY_HF_SENTENCES = [
    "a photo of a cat", "a dog on the grass", "two cats sleeping on a sofa", "a red bicycle",
    "the eiffel tower at night", "une photo d'un chat", "ein Hund im Gras", "café naïve résumé",
    "一只猫在沙发上睡觉", "一只狗在草地上", "街道上的一只船和自行车", "埃菲尔铁塔的夜景",
    "日本の桜", "公園の犬", "한국어 텍스트", "자전거를 탄 사람",
]
TINY_HF_CONFIG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                   "patch_size": 16},
    # hf_model_name / hf_tokenizer_name are filled in by write_tiny_hf_model
    "text_cfg": {"hf_pooler_type": "mean_pooler", "hf_proj_type": "mlp",
                 "context_length": TINY_HF_CONTEXT},
}


def _unigram_tokenizer(vocab_size: int, specials: list[str]) -> Any:
    """A SentencePiece-style Unigram tokenizer (NFKC, metaspace) trained on
    ``TINY_HF_SENTENCES``, the special tokens first, with ids in the order given; the caller
    adds the post-processor its model family uses."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(TINY_HF_SENTENCES * 3, trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>"))
    return tok


def write_tiny_hf_text(folder: Path) -> Path:
    """A Hugging Face text tower's files as a Hub repository holds them: ``config.json`` (an
    XLM-RoBERTa of width 32), ``tokenizer.json`` (a Unigram model trained here on a few
    sentences in five languages, XLM-R's special tokens and ids) and ``tokenizer_config.json``
    (written by hand: ``save_pretrained`` of transformers 5 names a class 4.x cannot load)."""
    from tokenizers import processors

    folder.mkdir(parents=True, exist_ok=True)
    # ids 0..4, as in XLM-R
    tok = _unigram_tokenizer(200, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
        "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "xlm-roberta", "architectures": ["XLMRobertaModel"],
        "vocab_size": tok.get_vocab_size(), "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64,
        # RoBERTa positions start after the pad id: room for the context plus two
        "max_position_embeddings": TINY_HF_CONTEXT + 2, "type_vocab_size": 1,
        "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "gelu",
        "layer_norm_eps": 1e-5}))
    return folder


def write_tiny_hf_model(folder: Path, *, seed: int = 0, text_tower: str | None = None) -> Path:
    """Write an open_clip ``local-dir`` model whose text tower is a Hugging Face XLM-RoBERTa:
    open_clip_config.json, open_clip_model.safetensors (the whole model, random weights) and
    the tokenizer files, which open_clip reads from the model folder itself.

    ``text_tower`` is the ``hf_model_name`` recorded in the config: by default the folder's
    absolute path (the folder then holds the tower's config.json too), ``"."`` (the same,
    relative to the folder), or a Hub id to be found in the Hugging Face cache, as in
    open_clip's own multilingual configs."""
    import open_clip
    import torch

    folder = folder.resolve()
    write_tiny_hf_text(folder)
    cfg = json.loads(json.dumps(TINY_HF_CONFIG))
    cfg["text_cfg"].update(hf_model_name=str(folder), hf_tokenizer_name=str(folder),
                           hf_model_pretrained=False)
    torch.manual_seed(seed)
    model = open_clip.CustomTextCLIP(**cfg)
    save_weights(folder, model)
    del cfg["text_cfg"]["hf_model_pretrained"]
    if text_tower is not None:
        cfg["text_cfg"].update(hf_model_name=text_tower, hf_tokenizer_name=text_tower)
        if text_tower != ".":
            (folder / "config.json").unlink()
    write_config(folder, cfg)
    return folder


def write_hf_cache_repo(cache: Path, repo: str, files: dict[str, Path]) -> Path:
    """Put files into a Hugging Face Hub cache folder (``HF_HUB_CACHE``) as one snapshot of
    model repository ``repo``, the way ``hf_hub_download`` leaves them; returns the snapshot."""
    import shutil

    base = cache / ("models--" + repo.replace("/", "--"))
    commit = "0" * 40
    snapshot = base / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        shutil.copyfile(source, snapshot / name)
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(commit)
    return snapshot


def write_tiny_nllb_model(folder: Path, *, seed: int = 0) -> Path:
    """Like :func:`write_tiny_hf_model` with an NLLB (M2M-100 encoder) text tower, as
    open_clip's ``nllb-clip-*`` models: a linear projection of the first position, which holds
    the language code (``eng_Latn``, ``zho_Hans``, ...); NLLB's 202 codes are tokens."""
    import open_clip
    import torch
    from tokenizers import processors
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    codes = list(FAIRSEQ_LANGUAGE_CODES)
    tok = _unigram_tokenizer(400, ["<s>", "<pad>", "</s>", "<unk>", *codes, "<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="eng_Latn $A </s>", pair="eng_Latn $A $B </s>",
        special_tokens=[("eng_Latn", tok.token_to_id("eng_Latn")), ("</s>", 2)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "NllbTokenizer", "src_lang": "eng_Latn", "legacy_behaviour": False,
        "model_max_length": 512, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "pad_token": "<pad>", "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>",
        "additional_special_tokens": codes}))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "m2m_100", "architectures": ["M2M100ForConditionalGeneration"],
        "vocab_size": tok.get_vocab_size(), "d_model": 32, "encoder_layers": 2,
        "decoder_layers": 1, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
        "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "max_position_embeddings": 64,
        "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2,
        "scale_embedding": True, "activation_function": "relu", "dropout": 0.0}))
    cfg = json.loads(json.dumps(TINY_HF_CONFIG))
    cfg["text_cfg"] = {"hf_model_name": str(folder), "hf_tokenizer_name": str(folder),
                       "hf_proj_type": "linear", "hf_pooler_type": "cls_pooler",
                       "context_length": TINY_HF_CONTEXT}
    torch.manual_seed(seed)
    model = open_clip.CustomTextCLIP(**{**cfg, "text_cfg": {**cfg["text_cfg"],
                                                            "hf_model_pretrained": False}})
    save_weights(folder, model)
    write_config(folder, cfg)
    return folder
