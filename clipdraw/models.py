"""The two frozen networks the optimizer drives, behind small wrappers that read their sizes
from the loaded weights: the dVAE decoder (token probabilities -> image) and CLIP
(text and images -> unit-norm embeddings)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import weights
from .device import resolve_device

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LOGIT_LAPLACE_EPS = 0.1  # dall_e.utils.logit_laplace_eps: pixels live in [eps, 1 - eps]


class HeldConv2d(nn.Module):
    """dall_e's ``Conv2d``, frozen, with its weights stored once in the dtype it computes in.

    dall_e's own layer keeps float32 parameters and, on CUDA with ``use_float16``, casts them
    to half on every call: the whole decoder's 44M weights re-cast per pass. This one casts
    when it moves (``.to``/``.cuda``/``.cpu``): float16 on CUDA where dall_e computes in half,
    float32 everywhere else. Same weights, same arithmetic as dall_e; state-dict keys stay
    dall_e's (``w``, ``b``). Weights are channels-last, the layout the decoder runs in
    (``DVAEDecoder.forward``).
    """

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.half_on_cuda = bool(conv.use_float16)
        self.padding = (int(conv.kw) - 1) // 2
        self.register_buffer("w", conv.w.detach().contiguous(memory_format=torch.channels_last))
        self.register_buffer("b", conv.b.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x.to(self.w.dtype), self.w, self.b, padding=self.padding)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        dtype = torch.float16 if self.half_on_cuda and self.w.is_cuda else torch.float32
        if self.w.dtype != dtype:
            self.w, self.b = self.w.to(dtype), self.b.to(dtype)
        return self


def hold_conv_weights(module: nn.Module) -> nn.Module:
    """Replace every dall_e ``Conv2d`` inside ``module`` (in place) by a ``HeldConv2d``."""
    from dall_e.utils import Conv2d  # noqa: PLC0415

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv2d):
                setattr(parent, name, HeldConv2d(child))
    return module


class UpsampledBlock(nn.Module):
    """``block(upsample(x))`` with the block's opening 1x1 convolutions and ReLU run before the
    nearest upsampling rather than after. Both act pixel by pixel, so they commute with copying
    pixels: the result is dall_e's, while those convolutions cost a quarter and the 4x larger
    upsampled input is never made (nor kept for backward)."""

    def __init__(self, upsample: nn.Upsample, block: nn.Module):
        super().__init__()
        self.upsample, self.block = upsample, block

    @staticmethod
    def applies(upsample: nn.Module, block: nn.Module) -> bool:
        res = getattr(block, "res_path", None)
        pointwise = lambda m: isinstance(m, nn.Identity) or (isinstance(m, HeldConv2d) and m.w.shape[-1] == 1)
        return (isinstance(upsample, nn.Upsample) and upsample.mode == "nearest" and res is not None
                and pointwise(block.id_path) and pointwise(res.conv_1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res, up = self.block.res_path, self.upsample
        hidden = up(res.conv_1(res.relu_1(x)))
        hidden = res.conv_4(res.relu_4(res.conv_3(res.relu_3(res.conv_2(res.relu_2(hidden))))))
        return up(self.block.id_path(x)) + self.block.post_gain * hidden


def decoder_stages(blocks: nn.Module) -> List[List[nn.Module]]:
    """dall_e's decoder as its four groups of stages: the residual blocks, the first of each
    upsampled group joined with the upsampling before it, the input convolution in the first
    group and the output head in the last. ``low_memory`` recomputes along these lines."""
    groups: List[List[nn.Module]] = []
    leading: List[nn.Module] = []       # the input convolution, until the first group opens
    upsample = None                     # a group's closing upsampling, waiting for the next block
    for name, child in blocks.named_children():   # input, group_1..group_4, output
        is_group = name.startswith("group_")
        stages = leading if is_group or not groups else groups[-1]
        for module in (child.children() if is_group else [child]):
            if isinstance(module, nn.Upsample) and upsample is None:
                upsample = module
                continue
            if upsample is not None:
                module = (UpsampledBlock(upsample, module) if UpsampledBlock.applies(upsample, module)
                          else nn.Sequential(upsample, module))
                upsample = None
            stages.append(module)
        if is_group:
            groups.append(stages)
            leading = []
    if upsample is not None:
        groups[-1].append(upsample)
    return groups


def run_stages(stages: Sequence[nn.Module], x: torch.Tensor, recompute: bool = False) -> torch.Tensor:
    for stage in stages:
        x = checkpoint(stage, x, use_reentrant=False, preserve_rng_state=False) if recompute else stage(x)
    return x


class DVAEDecoder(nn.Module):
    """dall_e's Decoder, frozen, mapping (B, vocab, g, g) token probabilities to RGB in [0, 1].

    The wrapper takes the module over: its convolutions become ``HeldConv2d`` in place, and it
    runs them stage by stage (``decoder_stages``: the same modules regrouped, not registered twice).
    """

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = hold_conv_weights(decoder.eval().requires_grad_(False))
        self.vocab_size = int(decoder.blocks.input.w.shape[1])
        self.upsample_factor = math.prod(
            int(m.scale_factor) for m in decoder.modules() if isinstance(m, nn.Upsample))
        self.groups = decoder_stages(decoder.blocks)
        self.stages = [stage for group in self.groups for stage in group]

    def forward(self, tokens: torch.Tensor, low_memory: bool = False) -> torch.Tensor:
        """``low_memory``: keep only each group's input for backward; in backward recompute the
        group keeping only its stages' inputs, then each stage (two more decoder forwards per
        step, for the memory of one stage instead of the whole decoder's)."""
        if tokens.dim() != 4 or tokens.shape[1] != self.vocab_size or tokens.dtype != torch.float32:
            raise ValueError(f"expected float32 token probabilities (B, {self.vocab_size}, g, g), "
                             f"got {tuple(tokens.shape)} {tokens.dtype}")   # dall_e's own checks
        # Channels-last: oneDNN's convolutions skip their layout reorders (about 15% faster here on
        # a CPU), cuDNN's half-precision ones run on tensor cores.
        tokens = tokens.contiguous(memory_format=torch.channels_last)
        if low_memory and torch.is_grad_enabled():
            out = tokens
            for group in self.groups:
                out = checkpoint(run_stages, group, out, True, use_reentrant=False, preserve_rng_state=False)
        else:
            out = run_stages(self.stages, tokens)
        # The decoder predicts logit-Laplace parameters; the first 3 channels are the means.
        pixels = torch.sigmoid(out[:, :3].float())
        return ((pixels - LOGIT_LAPLACE_EPS) / (1 - 2 * LOGIT_LAPLACE_EPS)).clamp(0, 1)  # unmap_pixels

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hard token ids (B, g, g) -> image: what a transformer or the dVAE encoder emits."""
        return self(F.one_hot(tokens, self.vocab_size).permute(0, 3, 1, 2).float())


class RecomputedSequential(nn.Sequential):
    """``nn.Sequential`` that, while ``recompute`` is on and gradients are wanted, keeps only
    each child's input for backward and recomputes the rest (activation checkpointing)."""

    recompute = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.recompute and torch.is_grad_enabled()):
            return super().forward(x)
        for block in self:
            x = checkpoint(block, x, use_reentrant=False, preserve_rng_state=False)
        return x


class ClipModel(nn.Module):
    """OpenAI CLIP, frozen, taking images in [0, 1] and raw strings, returning unit vectors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        # The vision transformer's residual blocks, made recomputable (same children, same state-dict
        # keys); ResNet CLIPs have none and keep their activations.
        transformer = getattr(model.visual, "transformer", None)
        self.image_blocks = None
        if transformer is not None and type(transformer.resblocks) is nn.Sequential:
            transformer.resblocks = self.image_blocks = RecomputedSequential(*transformer.resblocks)
        self.input_resolution = int(model.visual.input_resolution)
        self.context_length = int(model.context_length)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        clip = weights.import_clip()
        tokens = clip.tokenize(list(texts), context_length=self.context_length, truncate=True)
        return F.normalize(self.model.encode_text(tokens.to(self.mean.device)).float(), dim=-1)

    def encode_image(self, images: torch.Tensor, low_memory: bool = False) -> torch.Tensor:
        """Images of any size in [0, 1]; resized to the model's input resolution when needed.

        ``low_memory``: recompute the vision transformer's blocks in backward instead of keeping
        their activations (one more forward of them; a tenth of the memory at 32 cutouts)."""
        if images.shape[-1] != self.input_resolution or images.shape[-2] != self.input_resolution:
            images = F.interpolate(images, size=(self.input_resolution,) * 2, mode="bilinear",
                                   align_corners=False, antialias=True)
        if self.image_blocks is None or not low_memory:
            return F.normalize(self.model.encode_image((images - self.mean) / self.std).float(), dim=-1)
        self.image_blocks.recompute = True
        try:
            return F.normalize(self.model.encode_image((images - self.mean) / self.std).float(), dim=-1)
        finally:
            self.image_blocks.recompute = False


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
