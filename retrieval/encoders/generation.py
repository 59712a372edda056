"""Writing captions with a CoCa model: beam search, top-k and top-p sampling, without
``transformers``.

open_clip's ``CoCa.generate`` imports its logits processors and beam scorer from
``transformers`` and refuses to run without them (for every generation type), and the
``transformers`` versions it works with would downgrade ``huggingface_hub``. The sampling loop
here is a port of open_clip's (same minimum length, end-of-text forced at ``seq_len``, the same
top-k / top-p filters and repetition penalty; ids equal to open_clip's for the same seed), and
the beam search is a plain one (open_clip's is transformers' *group* beam search, so beams can
differ). Options carry open_clip's names and defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import InputError

GENERATION_TYPES = ("beam_search", "top_p", "top_k")


@dataclass(frozen=True)
class GenerationOptions:
    """How captions are generated; names and defaults as ``open_clip``'s ``CoCa.generate``."""

    generation_type: str = "beam_search"
    seq_len: int = 30  # tokens at most, start and end of text included (and the context length)
    min_seq_len: int = 5  # end of text is not allowed before this many tokens
    num_beams: int = 6
    top_p: float = 0.1  # top_p: keep the fewest tokens whose probability adds up to top_p
    top_k: int = 1  # top_k: keep the k most probable tokens
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0  # sampling is seeded, so a caption is reproducible

    def check(self, context_length: int) -> GenerationOptions:
        if self.generation_type not in GENERATION_TYPES:
            raise InputError(f"unknown generation type {self.generation_type!r}; expected one "
                             f"of {', '.join(GENERATION_TYPES)}")
        if self.seq_len < 3:
            raise InputError(f"seq_len must be at least 3, got {self.seq_len}")
        if not 0 <= self.min_seq_len < self.seq_len:
            raise InputError(f"min_seq_len must be below seq_len ({self.seq_len})")
        if self.seq_len > context_length:  # a caption cannot outgrow the model's context
            return replace(self, seq_len=context_length,
                           min_seq_len=min(self.min_seq_len, context_length - 1))
        if self.num_beams < 1 or self.top_k < 1 or not 0 < self.top_p <= 1:
            raise InputError("num_beams and top_k must be >= 1, top_p in (0, 1]")
        if self.temperature <= 0 or self.repetition_penalty <= 0:
            raise InputError("temperature and repetition_penalty must be > 0")
        return self

    def key(self) -> dict[str, Any]:
        """What makes two runs write the same captions (stored with each caption)."""
        d = asdict(self)
        if self.generation_type == "beam_search":
            for name in ("top_p", "top_k", "temperature", "seed"):
                d.pop(name)
        else:
            d.pop("num_beams")
            d.pop("top_p" if self.generation_type == "top_k" else "top_k")
        return d


@dataclass(frozen=True)
class Tokens:
    """The special token ids of a CoCa model's tokenizer."""

    sot: int
    eot: int
    pad: int


def _penalise(logits: Any, seqs: Any, penalty: float) -> Any:
    """transformers' RepetitionPenaltyLogitsProcessor: seen tokens' logits divided (positive)
    or multiplied (negative) by ``penalty``."""
    if penalty == 1.0:
        return logits
    seen = logits.gather(1, seqs)
    seen = seen.where(seen < 0, seen / penalty).where(seen >= 0, seen * penalty)
    return logits.scatter(1, seqs, seen)


def _next_logits(model: Any, seqs: Any, latent: Any, embs: Any) -> Any:
    out = model(None, seqs, image_latent=latent, image_embs=embs, output_labels=False)
    return out["logits"][:, -1].float()


def sample(model: Any, images: Any, opts: GenerationOptions, tok: Tokens) -> Any:
    """top-k / top-p sampling as open_clip's ``generate`` does it; (B, L) ids from sot."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator(device=images.device).manual_seed(opts.seed)
    latent, embs = model._encode_image(images)
    out = torch.full((images.shape[0], 1), tok.sot, dtype=torch.long, device=images.device)
    while out.shape[1] < opts.seq_len:
        done = (out[:, -1] == tok.eot) | (out[:, -1] == tok.pad)
        if bool(done.all()):
            break
        logits = _next_logits(model, out[~done], latent[~done], embs[~done])
        logits = _penalise(logits, out[~done], opts.repetition_penalty)
        if out.shape[1] < opts.min_seq_len:
            logits[:, tok.eot] = float("-inf")
        if opts.generation_type == "top_k":
            kth = torch.topk(logits, min(opts.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        else:
            srt, idx = torch.sort(logits, descending=False)
            remove = srt.softmax(-1).cumsum(-1) <= (1 - opts.top_p)
            remove[:, -1] = False
            logits = logits.masked_fill(remove.scatter(1, idx, remove), float("-inf"))
        probs = F.softmax(logits / opts.temperature, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        if out.shape[1] + 1 == opts.seq_len:
            nxt = torch.full_like(nxt, tok.eot)
        step = torch.full((out.shape[0],), tok.pad, dtype=torch.long, device=out.device)
        step[~done] = nxt
        out = torch.cat([out, step[:, None]], dim=1)
    return out


def beam_search(model: Any, images: Any, opts: GenerationOptions, tok: Tokens) -> list[Any]:
    """Plain beam search (``num_beams`` beams per image, scores are summed log-probabilities
    over the length, as transformers' default length penalty 1); the best ids per image."""
    import torch

    k, n = opts.num_beams, images.shape[0]
    latent, embs = model._encode_image(images)
    latent, embs = latent.repeat_interleave(k, 0), embs.repeat_interleave(k, 0)
    seqs = torch.full((n * k, 1), tok.sot, dtype=torch.long, device=images.device)
    scores = torch.zeros(n, k, device=images.device)
    scores[:, 1:] = float("-inf")  # all beams start equal: keep one
    finished: list[list[tuple[float, Any]]] = [[] for _ in range(n)]
    while seqs.shape[1] < opts.seq_len:
        logits = _penalise(_next_logits(model, seqs, latent, embs), seqs,
                           opts.repetition_penalty)
        logp = torch.log_softmax(logits, dim=-1)
        logp[:, tok.pad] = float("-inf")  # pad would end a caption unseen
        if seqs.shape[1] < opts.min_seq_len:
            logp[:, tok.eot] = float("-inf")
        if seqs.shape[1] + 1 == opts.seq_len:
            eot = logp[:, tok.eot].clone()
            logp.fill_(float("-inf"))
            logp[:, tok.eot] = eot
        vocab = logp.shape[1]
        total = (scores.view(-1, 1) + logp).view(n, k * vocab)
        top, where = total.topk(2 * k, dim=1)
        rows, keep_scores = [], torch.full((n, k), float("-inf"), device=images.device)
        next_tokens = torch.full((n, k), tok.pad, dtype=torch.long, device=images.device)
        for b in range(n):
            kept = 0
            for s, w in zip(top[b].tolist(), where[b].tolist(), strict=True):
                beam, token = divmod(w, vocab)
                if s == float("-inf"):
                    break
                if token == tok.eot:
                    ids = torch.cat([seqs[b * k + beam], seqs.new_tensor([tok.eot])])
                    finished[b].append((s / ids.shape[0], ids))
                    continue
                if kept < k:
                    rows.append(b * k + beam)
                    next_tokens[b, kept], keep_scores[b, kept] = token, s
                    kept += 1
            rows += [b * k] * (k - kept)  # dead beams (score -inf) keep a placeholder
        seqs = torch.cat([seqs[torch.tensor(rows, device=seqs.device)],
                          next_tokens.view(-1, 1)], dim=1)
        scores = keep_scores
        if all(_settled(f, scores[b], seqs.shape[1], k) for b, f in enumerate(finished)):
            break
    return [max(f, key=lambda x: x[0])[1] if f else seqs[b * k] for b, f in enumerate(finished)]


def _settled(done: list[tuple[float, Any]], live: Any, length: int, k: int) -> bool:
    """k captions are finished and the best live beam, ended at the next step, would not beat
    the k-th of them (transformers' stopping rule without early stopping)."""
    if len(done) < k:
        return False
    kth = sorted((s for s, _ in done), reverse=True)[k - 1]
    best_live = float(live.max())
    return best_live == float("-inf") or best_live / (length + 1) <= kth
