"""The toy world's models behind the same ``Models`` as the real world's: what the optimizer
and the transformer engine draw with when ``--model toy``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

import torch

from ..device import resolve_device, resolve_precision
from ..dvae import DVAEDecoder, DVAEEncoder
from ..models import ClipModel, Models
from .models import load_toy_clip, load_toy_dvae, weights_dir


def load_toy_judge(device: torch.device, root: Optional[Path] = None) -> Tuple[ClipModel, dict]:
    """The toy judge CLIP (the guide's recipe from another seed, never a guide) and its run.json entry."""
    root = root or weights_dir()
    return (ClipModel(load_toy_clip(root, "judge")).to(device),
            {"name": "toy-judge", "path": str(root / "judge.safetensors")})


def load_toy_encoder(device: torch.device, root: Optional[Path] = None) -> Tuple[DVAEEncoder, dict]:
    """The toy dVAE's encoder (init images and edits in the toy world) and its run.json entry."""
    root = root or weights_dir()
    encoder, _ = load_toy_dvae(root)
    module = DVAEEncoder(encoder).to(device)
    return module, {"name": "toy", "path": str(root / "dvae.safetensors"), "vocab_size": module.vocab_size}


def load_toy_models(device: Union[str, torch.device] = "cpu", root: Optional[Path] = None,
                    judge: bool = True, precision: Union[str, torch.dtype, None] = "auto",
                    encoder: bool = True) -> Models:
    """The shipped toy CLIP and dVAE decoder, ready for ``clipdraw.generate``; with ``judge``,
    also the toy judge CLIP that picks the result among the frames; with ``encoder``, the dVAE
    encoder that init images and edits need. ``precision`` as in ``clipdraw.load_models``."""
    root = root or weights_dir()
    target = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = precision if isinstance(precision, torch.dtype) or precision is None else resolve_precision(precision)
    _, decoder = load_toy_dvae(root)
    dvae = DVAEDecoder(decoder).set_precision(dtype).to(target)
    clip = ClipModel(load_toy_clip(root)).to(target)
    info = {"clip": {"name": "toy", "path": str(root / "clip.safetensors"), "input_resolution": clip.input_resolution},
            "decoder": {"name": "toy", "path": str(root / "dvae.safetensors"), "vocab_size": dvae.vocab_size,
                        "upsample_factor": dvae.upsample_factor,
                        "dtype": str(dvae.compute_dtype).removeprefix("torch.")}}
    models = Models(clip=clip, decoder=dvae, device=target, info=info, precision=dtype)
    if judge:
        models.judge, info["judge"] = load_toy_judge(target, root)
    if encoder:
        models.encoder, info["encoder"] = load_toy_encoder(target, root)
    return models
