"""dall_e's convolution, frozen and held once in the dtype it computes in."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


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

    @property
    def pointwise(self) -> bool:
        """A 1x1 convolution: it acts pixel by pixel."""
        return self.w.shape[-1] == 1

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        dtype = self.compute_dtype
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
