"""What a training step minimises: the contrastive loss (with identical captions as positives of
each other), SigLIP's sigmoid loss, and CoCa's captioning loss on top of the contrastive one.

* CLIP: open_clip's symmetric cross-entropy, except that the target of an image is spread over
  every caption in the batch that is the same text as its own (and likewise for a text). With
  label-like captions ("a photo of the digit seven") many images of one batch share a caption;
  open_clip's one-hot target would push each of them away from the others' identical texts.
  With distinct captions the loss is exactly open_clip's ``ClipLoss``.
* SigLIP: open_clip's sigmoid loss with the same positives (label +1 for every equal caption).
* CoCa: the contrastive loss above times ``clip_loss_weight`` plus the captioning loss
  (teacher-forced cross-entropy over the next token, pads ignored) times
  ``caption_loss_weight``, as open_clip's ``CoCaLoss`` (weights 1 and 2, as open_clip's
  trainer uses). The decoder runs only over the longest caption of the batch and the vocabulary
  projection only at the positions that have a label, which gives the same loss as the model's
  own forward at a fraction of the cost.

``caption_vocab="data"`` (training from scratch on a known, small vocabulary, as the demo
captioner does) computes the softmax over the tokens that occur in the training captions only.
To keep the model exactly what it computes in training, one hidden unit of the decoder's final
layer norm is pinned to the constant 1 (weight 0, bias 1) and every other token's projection
column reads only that unit, at logit ``-30``: in the saved model those tokens keep a
probability below 1e-8 in total, so the full-vocabulary softmax the model computes at
generation time is the one it was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

UNUSED_LOGIT = -30.0
CAPTION_LOSS_WEIGHT = 2.0
CLIP_LOSS_WEIGHT = 1.0


def is_coca(model: Any) -> bool:
    return hasattr(model, "text_decoder") and hasattr(model, "_encode_image")


def same_caption(captions: Sequence[str]) -> Any:
    """(B, B) float matrix: 1 where two captions of the batch are the same text."""
    import torch

    keys = {c: i for i, c in enumerate(dict.fromkeys(" ".join(c.lower().split())
                                                     for c in captions))}
    ids = torch.tensor([keys[" ".join(c.lower().split())] for c in captions])
    return (ids[:, None] == ids[None, :]).float()


def contrastive_loss(image: Any, text: Any, scale: Any, positives: Any) -> Any:
    """Symmetric cross-entropy with soft targets: each row's positives share its target."""
    import torch.nn.functional as F

    logits = scale * image @ text.T
    target = positives / positives.sum(dim=1, keepdim=True)
    per_image = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    per_text = -(target * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
    return (per_image + per_text) / 2


def sigmoid_loss(image: Any, text: Any, scale: Any, bias: Any, positives: Any) -> Any:
    """open_clip's SigLIP loss (one device) with every equal caption a positive."""
    import torch.nn.functional as F

    logits = scale * image @ text.T + bias
    labels = 2 * positives - 1
    return -F.logsigmoid(labels * logits).sum() / image.shape[0]


class Objective:
    """The loss of one batch for ``model``; ``vocab`` (token ids) restricts CoCa's softmax."""

    def __init__(self, model: Any, vocab: Sequence[int] | None = None) -> None:
        import torch

        self.model = model
        self.coca = is_coca(model)
        self.siglip = getattr(model, "logit_bias", None) is not None
        self.vocab: Any = None
        self.remap: Any = None
        if self.coca and vocab is not None:
            size = model.text_decoder.text_projection.shape[1]
            self.vocab = torch.tensor(sorted(set(vocab)), dtype=torch.long)
            self.remap = torch.full((size,), -100, dtype=torch.long)
            self.remap[self.vocab] = torch.arange(len(self.vocab))
            self.pin()

    def __call__(self, images: Any, tokens: Any, captions: Sequence[str]) -> Any:
        model = self.model
        positives = same_caption(captions).to(images.device)
        if not self.coca:
            image = model.encode_image(images, normalize=True)
            text = model.encode_text(tokens, normalize=True)
            if self.siglip:
                return sigmoid_loss(image, text, model.logit_scale.exp(), model.logit_bias,
                                    positives)
            return contrastive_loss(image, text, model.logit_scale.exp(), positives)
        image, image_tokens = model._encode_image(images)
        text, token_embs = model._encode_text(tokens)
        contrastive = contrastive_loss(image, text, model.logit_scale.exp(), positives)
        return CLIP_LOSS_WEIGHT * contrastive + CAPTION_LOSS_WEIGHT * self.caption_loss(
            image_tokens, token_embs, tokens)

    def caption_loss(self, image_tokens: Any, token_embs: Any, tokens: Any) -> Any:
        """Next-token cross-entropy over the positions that have a label (pad id 0 ignored)."""
        import torch.nn.functional as F

        pad = int(getattr(self.model, "pad_id", 0))
        length = int((tokens != pad).sum(dim=1).max())
        labels = tokens[:, 1:length]
        hidden = decoder_hidden(self.model.text_decoder, image_tokens, token_embs[:, :length - 1])
        keep = labels != pad
        projection = self.model.text_decoder.text_projection
        if self.vocab is None:
            return F.cross_entropy(hidden[keep] @ projection, labels[keep])
        vocab = self.vocab.to(projection.device)
        target = self.remap.to(labels.device)[labels[keep]]
        if bool((target < 0).any()):
            raise ValueError("a caption holds a token outside the training vocabulary")
        return F.cross_entropy(hidden[keep] @ projection[:, vocab], target)

    def pin(self) -> None:
        """Keep the restricted vocabulary's invariants (after every optimiser step, on save):
        the last unit of the decoder's final norm is 1, unused tokens read only it."""
        import torch

        if self.vocab is None:
            return
        decoder = self.model.text_decoder
        with torch.no_grad():
            decoder.ln_final.weight[-1] = 0.0
            decoder.ln_final.bias[-1] = 1.0
            projection = decoder.text_projection
            unused = torch.ones(projection.shape[1], dtype=torch.bool, device=projection.device)
            unused[self.vocab.to(projection.device)] = False
            projection[:, unused] = 0.0
            projection[-1, unused] = UNUSED_LOGIT


def decoder_hidden(decoder: Any, image_embs: Any, text_embs: Any) -> Any:
    """open_clip's ``MultimodalTransformer.forward`` up to (not including) the vocabulary
    projection, so the projection can run on the labelled positions only."""
    length = text_embs.shape[1]
    if not getattr(decoder, "batch_first", True):
        image_embs, text_embs = image_embs.permute(1, 0, 2), text_embs.permute(1, 0, 2)
    for block, cross in zip(decoder.resblocks, decoder.cross_attn, strict=True):
        text_embs = block(text_embs, attn_mask=decoder.attn_mask[:length, :length])
        text_embs = cross(text_embs, k_x=image_embs, v_x=image_embs)
    if not getattr(decoder, "batch_first", True):
        text_embs = text_embs.permute(1, 0, 2)
    return decoder.ln_final(text_embs)


def caption_vocabulary(tokenizer: Any, captions: Sequence[str]) -> list[int]:
    """The token ids of ``captions`` (start and end of text included, pad excluded)."""
    found: set[int] = set()
    for start in range(0, len(captions), 1024):
        ids = tokenizer(list(captions[start:start + 1024]))
        found.update(int(i) for i in ids.unique())
    found.discard(0)
    return sorted(found)


def init_coca(model: Any) -> None:
    """open_clip leaves a new CoCa's vocabulary projection uninitialised (``torch.empty``;
    its ``init_parameters`` fails in 3.3): initialise it as a linear layer would be."""
    import torch

    projection = model.text_decoder.text_projection
    with torch.no_grad():
        torch.nn.init.normal_(projection, std=projection.shape[0] ** -0.5)
