"""Tiny models built from the real classes and saved in the real formats.

CLIP: a ``clip.model.CLIP`` with small widths, saved as a state dict (what ``clip.load``
accepts for a path) or as a TorchScript archive (the format OpenAI publishes).
dVAE: a ``dall_e.Decoder`` with the smallest widths its validators allow, pickled whole as
OpenAI's decoder.pkl is, in torch's zip format or the legacy one.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from clipdraw.weights import import_clip

TINY_CLIP = dict(embed_dim=32, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=8,
                 context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
                 transformer_layers=1)
TINY_DECODER = dict(n_init=8, n_hid=64, n_blk_per_group=1, vocab_size=512)


def make_tiny_clip(seed: int = 0) -> torch.nn.Module:
    clip = import_clip()
    torch.manual_seed(seed)
    model = clip.model.CLIP(**TINY_CLIP)
    clip.model.convert_weights(model)   # as published: fp16 weights
    return model.float().eval()


def save_tiny_clip(path: Path, seed: int = 0, torchscript: bool = False) -> Path:
    model = make_tiny_clip(seed)
    if torchscript:
        res = TINY_CLIP["image_resolution"]
        image = torch.rand(1, 3, res, res)
        text = torch.zeros(1, TINY_CLIP["context_length"], dtype=torch.long)
        text[0, :3] = torch.tensor([49406, 320, 49407])
        with warnings.catch_warnings():   # TorchScript is deprecated, but it is the published format
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, (image, text), check_trace=False)
            torch.jit.save(traced, str(path))
    else:
        torch.save(model.state_dict(), path)
    return path


def make_tiny_decoder(seed: int = 0):
    import dall_e

    torch.manual_seed(seed)
    return dall_e.Decoder(**TINY_DECODER, requires_grad=False)


def save_tiny_decoder(path: Path, seed: int = 0, legacy: bool = False, old_upsample: bool = False) -> Path:
    """Pickle a whole Decoder; ``old_upsample`` strips ``recompute_scale_factor`` as pre-1.5 pickles lack it."""
    decoder = make_tiny_decoder(seed)
    if old_upsample:
        for module in decoder.modules():
            if isinstance(module, torch.nn.Upsample):
                del module.recompute_scale_factor
    torch.save(decoder, path, _use_new_zipfile_serialization=not legacy)
    return path


TINY_ENCODER = dict(n_hid=8, n_blk_per_group=1, vocab_size=32)


def make_tiny_encoder(seed: int = 0, vocab_size: int = TINY_ENCODER["vocab_size"]):
    """A ``dall_e.Encoder`` far below its validators' minimum widths (they are switched off)."""
    import attr
    import dall_e

    torch.manual_seed(seed)
    with attr.validators.disabled():
        return dall_e.Encoder(**{**TINY_ENCODER, "vocab_size": vocab_size}, requires_grad=False)


def save_tiny_encoder(path: Path, seed: int = 0, vocab_size: int = TINY_ENCODER["vocab_size"]) -> Path:
    """Pickle a whole Encoder, as OpenAI's encoder.pkl is."""
    torch.save(make_tiny_encoder(seed, vocab_size), path)
    return path


# --------------------------------------------------------------------------- min-dalle (dalle-mini)

TINY_DALLEMINI = dict(layer_count=1, embed_count=32, glu_embed_count=48, image_vocab_count=16384)
TINY_WORDS = ("cat", "dog", "red", "a", "photo", "of")


def tiny_bart_tokenizer_files() -> tuple:
    """A BART-style vocab.json and merges.txt that spell any lower-case text, whole words for a few.

    Byte-pair merges join a word's letters left to right; the word-start marker is min-dalle's
    (chr(ord(" ") + 256)).
    """
    start = chr(ord(" ") + 256)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, start: 4}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
    merges = []
    for word in TINY_WORDS:
        piece = start
        for c in word:
            merges.append(f"{piece} {c}")
            piece += c
            vocab.setdefault(piece, len(vocab))
    merges = list(dict.fromkeys(merges))
    return vocab, "#version: 0.2\n" + "".join(m + "\n" for m in merges)


def save_tiny_dallemini(root: Path, mega: bool = False, seed: int = 0) -> Path:
    """min-dalle's real classes at tiny widths, saved where clipdraw's cache keeps them:
    ``root/min-dalle/dalle_bart_{mini,mega}/{vocab.json,merges.txt,encoder.pt,decoder.pt}`` and
    ``root/min-dalle/vqgan/detoker.pt``. The VQGAN has one size only; it is saved in float16
    (half the bytes; it loads into float32). Returns ``root``."""
    import json

    from clipdraw.dallemini import ARCHITECTURES, TEXT_TOKENS, import_min_dalle

    md = import_min_dalle()
    variant = "mega" if mega else "mini"
    folder = root / "min-dalle" / f"dalle_bart_{variant}"
    folder.mkdir(parents=True, exist_ok=True)
    (root / "min-dalle" / "vqgan").mkdir(exist_ok=True)
    vocab, merges = tiny_bart_tokenizer_files()
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf8")
    (folder / "merges.txt").write_text(merges, encoding="utf8")
    heads = ARCHITECTURES[variant]["attention_head_count"]
    size = dict(TINY_DALLEMINI, embed_count=max(TINY_DALLEMINI["embed_count"], 2 * heads))
    torch.manual_seed(seed)
    encoder = md.models.DalleBartEncoder(layer_count=size["layer_count"], embed_count=size["embed_count"],
                                         attention_head_count=heads, text_vocab_count=len(vocab) + 3,
                                         text_token_count=TEXT_TOKENS, glu_embed_count=size["glu_embed_count"],
                                         device="cpu")
    decoder = md.models.DalleBartDecoder(image_vocab_count=size["image_vocab_count"], embed_count=size["embed_count"],
                                         attention_head_count=heads, glu_embed_count=size["glu_embed_count"],
                                         layer_count=size["layer_count"], device="cpu")
    torch.save(encoder.state_dict(), folder / "encoder.pt")
    torch.save(decoder.state_dict(), folder / "decoder.pt")
    detoker = root / "min-dalle" / "vqgan" / "detoker.pt"
    if not detoker.exists():
        torch.save({k: v.half() for k, v in md.models.VQGanDetokenizer().state_dict().items()}, detoker)
    return root


class CheapVQGanDecoder(torch.nn.Module):
    """Stands in for the VQGAN's convolutional decoder (about 6 s per image on 2 CPU cores):
    the same (B, 256, 16, 16) -> (B, 3, 256, 256) contract, in milliseconds. The detokenizer's
    own embedding, grid layout and clipping stay real."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.mix = torch.nn.Conv2d(256, 3, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(torch.sigmoid(self.mix(z) * 4), scale_factor=16, mode="nearest")


def dynamo_works() -> bool:
    """Whether torch.compile can trace these models here (the compile tests skip otherwise)."""
    try:
        import torch._dynamo
        return torch._dynamo.is_dynamo_supported()
    except Exception:
        return False
