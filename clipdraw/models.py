"""The two frozen networks the optimizer drives, behind small wrappers that read their sizes
from the loaded weights: the dVAE decoder (token probabilities -> image) and CLIP
(text and images -> unit-norm embeddings)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import weights
from .device import resolve_device, resolve_precision
from .low_memory import (ReluMasks, add_relu_conv_input_grad, conv_input_grad, decode_keeping_masks,
                         nearest_upsample_input_grad, relu_conv_bands, relu_conv_in_place)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LOGIT_LAPLACE_EPS = 0.1  # dall_e.utils.logit_laplace_eps: pixels live in [eps, 1 - eps]


class HeldConv2d(nn.Module):
    """dall_e's ``Conv2d``, frozen, with its weights stored once in the dtype it computes in.

    dall_e's own layer keeps float32 parameters and, on CUDA with ``use_float16``, casts them
    to half on every call: the whole decoder's 44M weights re-cast per pass. This one casts
    when it moves (``.to``/``.cuda``/``.cpu``) or its ``precision`` is set: the layers dall_e
    computes in half (``half_on_cuda``) take ``precision`` when it is given, else float16 on
    CUDA and float32 elsewhere; the others stay float32. The choice rests on the dtype, not the
    device, so a CPU can run (and test) the half-precision path. Same weights, same arithmetic as
    dall_e; state-dict keys stay dall_e's (``w``, ``b``). Weights are channels-last, the layout
    the decoder runs in (``DVAEDecoder.forward``).
    """

    precision: Optional[torch.dtype] = None   # None: float16 on CUDA, float32 elsewhere

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.half_on_cuda = bool(conv.use_float16)
        self.padding = (int(conv.kw) - 1) // 2
        self.register_buffer("w", conv.w.detach().contiguous(memory_format=torch.channels_last))
        self.register_buffer("b", conv.b.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x.to(self.w.dtype), self.w, self.b, padding=self.padding)

    @property
    def compute_dtype(self) -> torch.dtype:
        if not self.half_on_cuda:
            return torch.float32
        if self.precision is not None:
            return self.precision
        return torch.float16 if self.w.is_cuda else torch.float32

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        dtype = self.compute_dtype
        if self.w.dtype != dtype:
            self.w, self.b = self.w.to(dtype), self.b.to(dtype)
        return self


class Stage(nn.Module):
    """A decoder stage with a second way to run: ``forward_keeping_masks(handed, masks)``,
    without autograd, keeping one bit per ReLU value in ``masks``, and ``input_grad(handed,
    masks)``, its input's gradient from its output's (the ``--low-memory`` path,
    ``clipdraw.low_memory``). ``handed`` is a one-element list holding the input, or the output's
    gradient, which the stage takes out: it is then freed as soon as the stage is done with it,
    not when the stage returns, and a gradient may be written into. ``writes_input``: whether
    the forward may write into its input."""

    writes_input = False

    def forward_keeping_masks(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        raise NotImplementedError

    def input_grad(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        raise NotImplementedError


class InputConv(Stage):
    """The decoder's opening convolution (no ReLU before it)."""

    def __init__(self, conv: HeldConv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward_keeping_masks(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        return self.conv(handed.pop())

    def input_grad(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        return conv_input_grad(self.conv, handed.pop())


class Upsampling(Stage):
    """A nearest upsampling left on its own (dall_e's last group has none; other decoders may)."""

    def __init__(self, upsample: nn.Upsample):
        super().__init__()
        self.upsample = upsample

    @staticmethod
    def applies(module: nn.Module) -> bool:
        return isinstance(module, nn.Upsample) and module.mode == "nearest" and upsample_factor(module) is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)

    def forward_keeping_masks(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        return self.upsample(handed.pop())

    def input_grad(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        return nearest_upsample_input_grad(handed.pop(), upsample_factor(self.upsample))


def upsample_factor(upsample: nn.Upsample) -> Optional[int]:
    """The whole-number scale of an ``nn.Upsample`` (same along both axes), else None."""
    scale = upsample.scale_factor
    scale = scale if isinstance(scale, (tuple, list)) else (scale, scale)
    if upsample.size is not None or len(set(scale)) != 1 or float(scale[0]) != int(scale[0]):
        return None
    return int(scale[0])


class ReluConv(Stage):
    """dall_e's output head, ``Sequential(relu, conv)``."""

    def __init__(self, head: nn.Sequential):
        super().__init__()
        self.head = head

    @staticmethod
    def applies(module: nn.Module) -> bool:
        children = list(module.children()) if isinstance(module, nn.Sequential) else []
        return (len(children) == 2 and isinstance(children[0], nn.ReLU) and isinstance(children[1], HeldConv2d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward_keeping_masks(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        return relu_conv_bands(self.head[1], handed.pop(), masks)

    def input_grad(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        return conv_input_grad(self.head[1], handed.pop()).masked_fill_(masks.pop(), 0)


def hold_conv_weights(module: nn.Module) -> nn.Module:
    """Replace every dall_e ``Conv2d`` inside ``module`` (in place) by a ``HeldConv2d``."""
    from dall_e.utils import Conv2d  # noqa: PLC0415

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv2d):
                setattr(parent, name, HeldConv2d(child))
    return module


class ResidualBlock(Stage):
    """dall_e's ``DecoderBlock``, ``id_path(x) + post_gain * res_path(x)``, where res_path is
    ``conv_4(relu(conv_3(relu(conv_2(relu(conv_1(relu(x))))))))``.

    The plain forward scales and sums in place on the residual branch's last output (which
    nothing keeps for backward): the same values with two fewer full-size tensors alive, 268 MB
    each at 512 px in the last group. The low-memory forward sums into ``x`` itself.
    """

    writes_input = True

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    @staticmethod
    def applies(block: nn.Module) -> bool:
        res = getattr(block, "res_path", None)
        return (hasattr(block, "id_path") and isinstance(getattr(block, "post_gain", None), float)
                and has_dall_e_residual_path(res))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.block.res_path
        hidden = res.conv_1(F.relu(x))
        for conv in (res.conv_2, res.conv_3, res.conv_4):
            hidden = conv(F.relu(hidden))
        return hidden.mul_(self.block.post_gain).add_(self.block.id_path(x))

    def forward_keeping_masks(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        res, x = self.block.res_path, handed.pop()
        hidden = relu_conv_bands(res.conv_1, x, masks)
        for conv in (res.conv_2, res.conv_3):
            hidden = relu_conv_in_place(conv, hidden, masks)
        out = identity_to(x, res.conv_4.w.dtype) if isinstance(self.block.id_path, nn.Identity) else self.block.id_path(x)
        return relu_conv_bands(res.conv_4, hidden, masks, into=out, gain=self.block.post_gain)

    def input_grad(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        res, id_path, grad = self.block.res_path, self.block.id_path, handed.pop()
        hidden = branch_input_grad(res, last_conv_input_grad(res, grad, self.block.post_gain, masks), masks)
        into = grad if isinstance(id_path, nn.Identity) else conv_input_grad(id_path, grad)   # grad: ours to reuse
        del grad
        return add_relu_conv_input_grad(res.conv_1, hidden, masks.pop(), into)


class UpsampledBlock(Stage):
    """``block(upsample(x))`` with the block's opening 1x1 convolutions and ReLU run before the
    nearest upsampling rather than after. Both act pixel by pixel, so they commute with copying
    pixels: the result is dall_e's, while those convolutions cost a quarter and the 4x larger
    upsampled input is never made (nor kept for backward)."""

    def __init__(self, upsample: nn.Upsample, block: nn.Module):
        super().__init__()
        self.upsample, self.block = upsample, block

    @staticmethod
    def applies(upsample: nn.Module, block: nn.Module) -> bool:
        return (Upsampling.applies(upsample) and ResidualBlock.applies(block)
                and is_pointwise(block.id_path) and is_pointwise(block.res_path.conv_1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.block.res_path
        hidden = self.upsample(res.conv_1(F.relu(x)))
        for conv in (res.conv_2, res.conv_3, res.conv_4):
            hidden = conv(F.relu(hidden))
        return hidden.mul_(self.block.post_gain).add_(self.upsample(self.block.id_path(x)))   # see ResidualBlock

    def forward_keeping_masks(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        res, x = self.block.res_path, handed.pop()
        hidden, identity = relu_conv_bands(res.conv_1, x, masks), self.block.id_path(x).to(res.conv_4.w.dtype)
        del x   # at 512 px, 134 MB no longer held while the 4x larger output is made
        hidden = self.upsample(hidden)
        for conv in (res.conv_2, res.conv_3):
            hidden = relu_conv_in_place(conv, hidden, masks)
        out = self.upsample(identity)
        del identity
        return relu_conv_bands(res.conv_4, hidden, masks, into=out, gain=self.block.post_gain)

    def input_grad(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        res, id_path, factor = self.block.res_path, self.block.id_path, upsample_factor(self.upsample)
        grad = handed.pop()
        hidden = last_conv_input_grad(res, grad, self.block.post_gain, masks)
        into = nearest_upsample_input_grad(grad, factor)
        del grad   # the largest tensor here (268 MB at 512 px): gone before the rest is made
        hidden = nearest_upsample_input_grad(branch_input_grad(res, hidden, masks), factor)
        into = into if isinstance(id_path, nn.Identity) else conv_input_grad(id_path, into)
        return add_relu_conv_input_grad(res.conv_1, hidden, masks.pop(), into)


def last_conv_input_grad(res: nn.Module, grad: torch.Tensor, gain: float, masks: ReluMasks) -> torch.Tensor:
    """Backward through a residual branch's ``gain * conv_4(relu(h))`` to the gradient of ``h``."""
    return conv_input_grad(res.conv_4, grad).mul_(gain).masked_fill_(masks.pop(), 0)


def branch_input_grad(res: nn.Module, grad: torch.Tensor, masks: ReluMasks) -> torch.Tensor:
    """Backward through ``conv_3(relu(conv_2(relu(h))))`` to the gradient of ``h`` (conv_1's
    output): small tensors, a quarter of the block's channels."""
    for conv in (res.conv_3, res.conv_2):
        grad = conv_input_grad(conv, grad).masked_fill_(masks.pop(), 0)
    return grad


def identity_to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x if x.dtype == dtype else x.to(dtype)


def is_pointwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Identity) or (isinstance(module, HeldConv2d) and module.w.shape[-1] == 1)


def has_dall_e_residual_path(res: Optional[nn.Module]) -> bool:
    """relu_1, conv_1, ..., relu_4, conv_4 in that order, every conv a ``HeldConv2d``."""
    names = [name for name, _ in res.named_children()] if res is not None else []
    return (names == [f"{kind}_{i}" for i in range(1, 5) for kind in ("relu", "conv")]
            and all(isinstance(getattr(res, f"conv_{i}"), HeldConv2d) for i in range(1, 5))
            and all(isinstance(getattr(res, f"relu_{i}"), nn.ReLU) for i in range(1, 5)))


def decoder_stages(blocks: nn.Module) -> List[nn.Module]:
    """dall_e's decoder as a list of stages: the input convolution, the residual blocks (the
    first of each upsampled group joined with the upsampling before it) and the output head,
    each in the form above. A module of another shape is kept as it is: the decoder then runs,
    but without its low-memory path (``DVAEDecoder.keeps_masks``)."""
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
            elif ResidualBlock.applies(module):
                module = ResidualBlock(module)
            elif ReluConv.applies(module):
                module = ReluConv(module)
            elif isinstance(module, HeldConv2d):
                module = InputConv(module)
            stages.append(module)
        if is_group:
            groups.append(stages)
            leading = []
    if upsample is not None:
        groups[-1].append(Upsampling(upsample) if Upsampling.applies(upsample) else upsample)
    return [stage for group in groups for stage in group]


def run_stages(stages: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for stage in stages:
        x = stage(x)
    return x


def decoder_output_to_pixels(out: torch.Tensor) -> torch.Tensor:
    """dall_e decoder output -> image in [0, 1]: its first 3 channels are the logit-Laplace
    means, mapped back with unmap_pixels."""
    pixels = torch.sigmoid(out[:, :3].float())
    return ((pixels - LOGIT_LAPLACE_EPS) / (1 - 2 * LOGIT_LAPLACE_EPS)).clamp(0, 1)


def softmax_over_vocabulary(x: torch.Tensor) -> torch.Tensor:
    """Softmax over dim 1 of (B, vocab, g, g), computed with the vocabulary as the last axis so
    that channels-last logits give channels-last probabilities, the decoder's layout, without a
    copy (``F.softmax(x, dim=1)`` returns them in the default layout)."""
    return F.softmax(x.permute(0, 2, 3, 1), dim=-1).permute(0, 3, 1, 2)


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
        self.stages = decoder_stages(decoder.blocks)
        self.keeps_masks = all(isinstance(stage, Stage) for stage in self.stages)
        self.fuses_softmax = (self.keeps_masks and isinstance(self.stages[0], InputConv)
                              and self.stages[0].conv.w.shape[-1] == 1)

    def set_precision(self, precision: Optional[torch.dtype]) -> "DVAEDecoder":
        """Compute in ``precision`` (float32, float16 or bfloat16) on any device; None: float16 on
        CUDA, float32 elsewhere. dall_e's input convolution stays float32 whatever is chosen.
        Set it before moving to the device: weights cast down and back up are rounded."""
        for conv in self.modules():
            if isinstance(conv, HeldConv2d):
                conv.precision = precision
                conv._apply(lambda t: t)
        return self

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype most of the decoder computes in."""
        return max((m.compute_dtype for m in self.modules() if isinstance(m, HeldConv2d)),
                   key=lambda dtype: dtype != torch.float32)

    def forward(self, tokens: torch.Tensor, low_memory: bool = False) -> torch.Tensor:
        """``low_memory``: keep a bit per ReLU value for backward, not the activations, and run
        backward by hand (``clipdraw.low_memory``). Recomputing stages instead, as an earlier
        version did, cost 1.5x the step for a higher peak: at 512 px the last group's gradients,
        268 MB each, set it once the kept activations are small."""
        tokens = self._checked(tokens)
        if low_memory and self.keeps_masks and torch.is_grad_enabled() and tokens.requires_grad:
            return decoder_output_to_pixels(decode_keeping_masks(self.stages, tokens))
        return decoder_output_to_pixels(run_stages(self.stages, tokens))

    def decode_softmax(self, scores: torch.Tensor, tau: float, low_memory: bool = False) -> torch.Tensor:
        """The image of the token probabilities ``softmax(scores / tau)`` over the vocabulary
        (dim 1): relaxed tokens. ``low_memory``: as in ``forward``, and the probabilities are never
        whole either: the softmax and the first (1x1) convolution run a band of rows at a time,
        forward and backward, from the scores, which the optimizer keeps anyway."""
        if low_memory and self.fuses_softmax and torch.is_grad_enabled() and scores.requires_grad:
            return decoder_output_to_pixels(decode_keeping_masks(self.stages, self._checked(scores), tau))
        return self(softmax_over_vocabulary(scores / tau), low_memory=low_memory)

    def _checked(self, tokens: torch.Tensor) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 4 or tokens.shape[1] != self.vocab_size \
                or tokens.dtype != torch.float32:   # dall_e's own checks, said in one line
            from .errors import InputError  # noqa: PLC0415

            got = (f"{tuple(tokens.shape)} {str(tokens.dtype).replace('torch.', '')}"
                   if isinstance(tokens, torch.Tensor) else type(tokens).__name__)
            raise InputError(f"the dVAE decoder takes float32 token probabilities shaped (batch, {self.vocab_size}, "
                             f"grid, grid), {self.vocab_size} being its vocabulary; got {got} (a decoder with "
                             "another vocabulary, or latents of another model?)")
        # Channels-last: oneDNN's convolutions skip their layout reorders (about 15% faster here on
        # a CPU), cuDNN's half-precision ones run on tensor cores.
        return tokens.contiguous(memory_format=torch.channels_last)

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
    judge: Optional[ClipModel] = None         # a CLIP that never guides: it ranks the saved frames
    precision: Optional[torch.dtype] = None   # of the decoder and CLIP's autocast; None: half on CUDA only


def load_models(clip_model: str = weights.DEFAULT_CLIP, decoder: str = weights.DEFAULT_DECODER,
                device: Union[str, torch.device] = "auto", offline: bool = False,
                precision: Union[str, torch.dtype, None] = "auto") -> Models:
    """Resolve (download if needed), verify and load CLIP and the dVAE decoder onto ``device``.

    ``precision``: 'auto' (float16 on CUDA, float32 elsewhere), 'float32', 'float16' or
    'bfloat16': the dVAE decoder's weights and CLIP's autocast during generation."""
    target = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = precision if isinstance(precision, torch.dtype) or precision is None else resolve_precision(precision)
    decoder_source, clip_source = weights.locate(decoder, "dvae"), weights.locate(clip_model, "clip")
    decoder_path, decoder_name = weights.materialize(decoder_source, offline=offline)
    clip_path, clip_name = weights.materialize(clip_source, offline=offline)
    dvae = DVAEDecoder(weights.load_dvae_module(decoder_path, "decoder")).set_precision(dtype).to(target)
    clip = ClipModel(weights.load_clip_module(clip_path)).to(target)
    info = {
        "clip": {"name": clip_name, "path": str(clip_path), "input_resolution": clip.input_resolution},
        "decoder": {"name": decoder_name, "path": str(decoder_path), "vocab_size": dvae.vocab_size,
                    "upsample_factor": dvae.upsample_factor,
                    "dtype": str(dvae.compute_dtype).removeprefix("torch.")},
    }
    return Models(clip=clip, decoder=dvae, device=target, info=info, precision=dtype)


def load_clip(clip_model: str = weights.DEFAULT_CLIP, device: Union[str, torch.device] = "auto",
              offline: bool = False) -> Tuple[ClipModel, dict]:
    """CLIP alone, resolved and loaded as ``load_models`` does: what dalle-mini's reranking needs.

    Returns the model and its run.json description.
    """
    target = device if isinstance(device, torch.device) else resolve_device(device)
    clip_path, clip_name = weights.resolve(clip_model, "clip", offline=offline)
    clip = ClipModel(weights.load_clip_module(clip_path)).to(target)
    return clip, {"name": clip_name, "path": str(clip_path), "input_resolution": clip.input_resolution}
