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


def make_tiny_encoder(seed: int = 0):
    """A ``dall_e.Encoder`` far below its validators' minimum widths (they are switched off)."""
    import attr
    import dall_e

    torch.manual_seed(seed)
    with attr.validators.disabled():
        return dall_e.Encoder(**TINY_ENCODER, requires_grad=False)


def save_tiny_encoder(path: Path, seed: int = 0) -> Path:
    """Pickle a whole Encoder, as OpenAI's encoder.pkl is."""
    torch.save(make_tiny_encoder(seed), path)
    return path
