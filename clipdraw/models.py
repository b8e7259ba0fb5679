"""The two frozen networks the optimizer drives, behind small wrappers that read their sizes
from the loaded weights: the dVAE decoder (token probabilities -> image) and CLIP
(text and images -> unit-norm embeddings)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import weights
from .device import resolve_device

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LOGIT_LAPLACE_EPS = 0.1  # dall_e.utils.logit_laplace_eps: pixels live in [eps, 1 - eps]


class DVAEDecoder(nn.Module):
    """dall_e's Decoder, frozen, mapping (B, vocab, g, g) token probabilities to RGB in [0, 1]."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder.eval().requires_grad_(False)
        self.vocab_size = int(decoder.blocks.input.w.shape[1])
        self.upsample_factor = math.prod(
            int(m.scale_factor) for m in decoder.modules() if isinstance(m, nn.Upsample))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.decoder(tokens)
        # The decoder predicts logit-Laplace parameters; the first 3 channels are the means.
        pixels = torch.sigmoid(out[:, :3].float())
        return ((pixels - LOGIT_LAPLACE_EPS) / (1 - 2 * LOGIT_LAPLACE_EPS)).clamp(0, 1)  # unmap_pixels

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hard token ids (B, g, g) -> image: what a transformer or the dVAE encoder emits."""
        return self(F.one_hot(tokens, self.vocab_size).permute(0, 3, 1, 2).float())


class ClipModel(nn.Module):
    """OpenAI CLIP, frozen, taking images in [0, 1] and raw strings, returning unit vectors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.input_resolution = int(model.visual.input_resolution)
        self.context_length = int(model.context_length)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        clip = weights.import_clip()
        tokens = clip.tokenize(list(texts), context_length=self.context_length, truncate=True)
        return F.normalize(self.model.encode_text(tokens.to(self.mean.device)).float(), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images of any size in [0, 1]; resized to the model's input resolution when needed."""
        if images.shape[-1] != self.input_resolution or images.shape[-2] != self.input_resolution:
            images = F.interpolate(images, size=(self.input_resolution,) * 2, mode="bilinear",
                                   align_corners=False, antialias=True)
        return F.normalize(self.model.encode_image((images - self.mean) / self.std).float(), dim=-1)


@dataclass
class Models:
    """Everything a generation needs, loaded once and reused across prompts."""

    clip: ClipModel
    decoder: DVAEDecoder
    device: torch.device
    info: dict = field(default_factory=dict)  # names, paths and hashes, for run.json


def load_models(clip_model: str = weights.DEFAULT_CLIP, decoder: str = weights.DEFAULT_DECODER,
                device: Union[str, torch.device] = "auto", offline: bool = False) -> Models:
    """Resolve (download if needed), verify and load CLIP and the dVAE decoder onto ``device``."""
    target = device if isinstance(device, torch.device) else resolve_device(device)
    decoder_source, clip_source = weights.locate(decoder, "dvae"), weights.locate(clip_model, "clip")
    decoder_path, decoder_name = weights.materialize(decoder_source, offline=offline)
    clip_path, clip_name = weights.materialize(clip_source, offline=offline)
    dvae = DVAEDecoder(weights.load_dvae_module(decoder_path, "decoder")).to(target)
    clip = ClipModel(weights.load_clip_module(clip_path)).to(target)
    info = {
        "clip": {"name": clip_name, "path": str(clip_path), "input_resolution": clip.input_resolution},
        "decoder": {"name": decoder_name, "path": str(decoder_path), "vocab_size": dvae.vocab_size,
                    "upsample_factor": dvae.upsample_factor},
    }
    return Models(clip=clip, decoder=dvae, device=target, info=info)


def load_clip(clip_model: str = weights.DEFAULT_CLIP, device: Union[str, torch.device] = "auto",
              offline: bool = False) -> Tuple[ClipModel, dict]:
    """CLIP alone, resolved and loaded as ``load_models`` does: what dalle-mini's reranking needs.

    Returns the model and its run.json description.
    """
    target = device if isinstance(device, torch.device) else resolve_device(device)
    clip_path, clip_name = weights.resolve(clip_model, "clip", offline=offline)
    clip = ClipModel(weights.load_clip_module(clip_path)).to(target)
    return clip, {"name": clip_name, "path": str(clip_path), "input_resolution": clip.input_resolution}
