"""dall_e's decoder regrouped into stages, each able to run two ways: plain (autograd), and
keeping one bit per ReLU value with its backward written by hand (``low_memory``).

The regrouping changes no value: the first block of each upsampled group runs its 1x1
convolutions before the nearest upsampling (they commute), and residual sums are taken in
place on tensors nothing keeps for backward.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .conv import HeldConv2d
from .low_memory import (ReluMasks, add_relu_conv_input_grad, conv_input_grad, nearest_upsample_input_grad,
                         relu_conv_bands, relu_conv_in_place, softmax_conv_bands, softmax_conv_input_grad)


class Stage(nn.Module):
    """A decoder stage with a second way to run: ``forward_keeping_masks(handed, masks)``,
    without autograd, keeping one bit per ReLU value in ``masks``, and ``input_grad(handed,
    masks)``, its input's gradient from its output's (the ``--low-memory`` path,
    ``clipdraw.dvae.low_memory``). ``handed`` is a one-element list holding the input, or the output's
    gradient, which the stage takes out: it is then freed as soon as the stage is done with it,
    not when the stage returns, and a gradient may be written into. ``writes_input``: whether
    the forward may write into its input."""

    writes_input = False

    def forward_keeping_masks(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        raise NotImplementedError

    def input_grad(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        raise NotImplementedError


class InputConv(Stage):
    """The decoder's opening convolution (no ReLU before it). When it is 1x1 (``takes_scores``),
    it can also start from token scores, taking their softmax itself a band of rows at a time
    (``forward_from_scores``, ``scores_grad``): the token probabilities are then never whole."""

    def __init__(self, conv: HeldConv2d):
        super().__init__()
        self.conv = conv

    @property
    def takes_scores(self) -> bool:
        return self.conv.pointwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward_keeping_masks(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        return self.conv(handed.pop())

    def input_grad(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        return conv_input_grad(self.conv, handed.pop())

    def forward_from_scores(self, scores: torch.Tensor, tau: float) -> torch.Tensor:
        """``forward(softmax(scores / tau))``, the softmax over the vocabulary, by bands."""
        return softmax_conv_bands(self.conv, scores, tau)

    def scores_grad(self, grad: torch.Tensor, scores: torch.Tensor, tau: float) -> torch.Tensor:
        """The gradient of ``scores`` in ``forward_from_scores`` from its output's."""
        return softmax_conv_input_grad(self.conv, grad, scores, tau)


class ModuleStage(Stage):
    """A stage that is one module of the decoder as it is (``module``), run by its own forward."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class Upsampling(ModuleStage):
    """A nearest upsampling left on its own (dall_e's last group has none; other decoders may)."""

    @staticmethod
    def applies(module: nn.Module) -> bool:
        return isinstance(module, nn.Upsample) and module.mode == "nearest" and upsample_factor(module) is not None

    def forward_keeping_masks(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        return self.module(handed.pop())

    def input_grad(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        return nearest_upsample_input_grad(handed.pop(), upsample_factor(self.module))


def upsample_factor(upsample: nn.Upsample) -> Optional[int]:
    """The whole-number scale of an ``nn.Upsample`` (same along both axes), else None."""
    scale = upsample.scale_factor
    scale = scale if isinstance(scale, (tuple, list)) else (scale, scale)
    if upsample.size is not None or len(set(scale)) != 1 or float(scale[0]) != int(scale[0]):
        return None
    return int(scale[0])


class ReluConv(ModuleStage):
    """dall_e's output head, ``Sequential(relu, conv)``."""

    @staticmethod
    def applies(module: nn.Module) -> bool:
        children = list(module.children()) if isinstance(module, nn.Sequential) else []
        return (len(children) == 2 and isinstance(children[0], nn.ReLU) and isinstance(children[1], HeldConv2d))

    def forward_keeping_masks(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        return relu_conv_bands(self.module[1], handed.pop(), masks)

    def input_grad(self, handed: List[torch.Tensor], masks: ReluMasks) -> torch.Tensor:
        return conv_input_grad(self.module[1], handed.pop()).masked_fill_(masks.pop(), 0)


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
    return isinstance(module, nn.Identity) or (isinstance(module, HeldConv2d) and module.pointwise)


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
    """The plain forward through ``stages``, under autograd."""
    for stage in stages:
        x = stage(x)
    return x
