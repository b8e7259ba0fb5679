"""The decoder's ``--low-memory`` path: a forward that keeps one bit per ReLU value for backward,
and a hand-written backward that reuses its gradient buffers.

Why by hand: with the decoder's weights frozen, a ReLU -> convolution pair needs for backward
only where the ReLU let values through; autograd keeps the ReLU's whole float output instead
(32 times the bytes), and its residual sums hold two full-size gradients at once. At 512 px the
last group's tensors are 268 MB each, so these choices, not the arithmetic, set the peak.

Each decoder stage (``clipdraw.dvae.stages.Stage``) offers ``forward_keeping_masks(handed, masks)``
and ``input_grad(handed, masks)``; ``decode_keeping_masks`` chains them under one autograd
Function. The helpers below work a band of rows at a time where a full-size temporary would
otherwise be made: a ReLU of a tensor still needed, a convolution's output added into another,
the token probabilities (the softmax of the scores) before the first convolution.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .relaxation import softmax_backward, softmax_over_vocabulary

BAND_BYTES = 32 * 2**20   # the size of a band's temporaries: small against the 268 MB they replace


def _bits(device: torch.device) -> torch.Tensor:
    """1, 2, 4, ..., 128 as uint8, made on ``device`` (a copy from the host would wait for it)."""
    return torch.ones(8, dtype=torch.uint8, device=device) << torch.arange(8, dtype=torch.uint8, device=device)


def _numpy_way(tensor: torch.Tensor, use_numpy: Optional[bool]) -> bool:
    return tensor.device.type == "cpu" if use_numpy is None else use_numpy


def pack_bits(mask: torch.Tensor, use_numpy: Optional[bool] = None) -> torch.Tensor:
    """A boolean (N, C, H, W) mask -> one bit per value (uint8), in (N, H, W, C) order: the
    memory order of the channels-last tensors it comes from, so no copy is needed first."""
    flat = mask.permute(0, 2, 3, 1).reshape(-1)
    if _numpy_way(flat, use_numpy):   # numpy's packbits: 4x faster than torch's ops on a CPU
        return torch.from_numpy(np.packbits(flat.numpy(), bitorder="little"))
    flat = F.pad(flat.view(torch.uint8), (0, -flat.numel() % 8))
    return (flat.view(-1, 8) * _bits(flat.device)).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: torch.Size, use_numpy: Optional[bool] = None) -> torch.Tensor:
    """Inverse of ``pack_bits``: the boolean (N, C, H, W) mask, laid out channels-last."""
    n, c, h, w = shape
    if _numpy_way(packed, use_numpy):
        flat = torch.from_numpy(np.unpackbits(packed.numpy(), count=n * h * w * c, bitorder="little").view(np.bool_))
    else:
        flat = (packed.unsqueeze(-1) & _bits(packed.device)).ne(0).view(-1)[:n * h * w * c]
    return flat.view(n, h, w, c).permute(0, 3, 1, 2)


class ReluMasks:
    """Where each ReLU of a forward blocked its input (``x <= 0``), a bit per value, handed back
    last in, first out: the order backward meets them."""

    def __init__(self):
        self._kept: List[Tuple[torch.Tensor, torch.Size]] = []

    def keep(self, x: torch.Tensor) -> None:
        self._kept.append((pack_bits(x <= 0), x.shape))

    def pop(self) -> torch.Tensor:
        packed, shape = self._kept.pop()
        return unpack_bits(packed, shape)

    @property
    def nbytes(self) -> int:
        return sum(packed.numel() for packed, _ in self._kept)

    def __len__(self) -> int:
        return len(self._kept)


def _band_rows(x: torch.Tensor, out_channels: int = 0) -> int:
    """Rows per band so that a band of ``x``, and of an output with ``out_channels``, stays
    within ``BAND_BYTES``."""
    n, c, _, w = x.shape
    return max(1, BAND_BYTES // max(n * max(c, out_channels) * w * x.element_size(), 1))


def relu_conv_bands(conv: nn.Module, x: torch.Tensor, masks: ReluMasks,
                    into: Optional[torch.Tensor] = None, gain: float = 1.0) -> torch.Tensor:
    """``conv(relu(x))`` for a frozen ``HeldConv2d``, keeping relu's mask in ``masks``.

    Worked a band of rows at a time, each band's ReLU a temporary, so ``x`` is left as it is
    (a residual block still needs it) and no full-size ``relu(x)`` is made. With ``into``, adds
    ``gain * conv(relu(x))`` into it (a residual sum, made without a second full-size tensor)
    and returns it.
    """
    masks.keep(x)
    pad, (n, _, height, width) = conv.padding, x.shape
    out = into if into is not None else torch.empty(
        n, conv.w.shape[0], height, width, dtype=conv.w.dtype, device=x.device).contiguous(
        memory_format=torch.channels_last)
    step = _band_rows(x, out.shape[1])
    for start in range(0, height, step):
        stop = min(start + step, height)
        low, high = max(start - pad, 0), min(stop + pad, height)   # the rows this band's outputs read
        band = F.relu(x[:, :, low:high].to(conv.w.dtype))
        top, bottom = pad - (start - low), pad - (high - stop)     # zero rows past the image's edges
        if top or bottom:
            padded = band.new_zeros(n, band.shape[1], stop - start + 2 * pad, width).contiguous(
                memory_format=torch.channels_last)
            padded[:, :, top:top + band.shape[2]] = band
            band = padded
        result = F.conv2d(band, conv.w, conv.b, padding=(0, pad))
        if into is None:
            out[:, :, start:stop] = result
        else:
            out[:, :, start:stop] += result.mul_(gain) if gain != 1 else result
    return out


def relu_conv_in_place(conv: nn.Module, x: torch.Tensor, masks: ReluMasks) -> torch.Tensor:
    """``conv(relu(x))`` for an ``x`` nothing else needs: its ReLU is taken in place."""
    masks.keep(x)
    return F.conv2d(F.relu_(x).to(conv.w.dtype), conv.w, conv.b, padding=conv.padding)


def conv_input_grad(conv: nn.Module, grad: torch.Tensor) -> torch.Tensor:
    """The gradient of a frozen convolution's input from its output's (stride 1, same padding)."""
    return F.conv_transpose2d(grad.to(conv.w.dtype), conv.w, padding=conv.padding)


def add_relu_conv_input_grad(conv: nn.Module, grad: torch.Tensor, blocked: torch.Tensor,
                             into: torch.Tensor) -> torch.Tensor:
    """``into += relu'(x) * conv_input_grad(conv, grad)`` for a 1x1 ``conv``, a band of rows at a
    time: the full-size product is never made (``blocked``: where relu's input was <= 0)."""
    if not conv.pointwise:
        return into.add_(conv_input_grad(conv, grad).masked_fill_(blocked, 0))
    step = _band_rows(into)
    for start in range(0, into.shape[2], step):
        rows = slice(start, start + step)
        into[:, :, rows] += conv_input_grad(conv, grad[:, :, rows]).masked_fill_(blocked[:, :, rows], 0)
    return into


def nearest_upsample_input_grad(grad: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest upsampling's backward: each input pixel's gradient is the sum over its copies."""
    return F.avg_pool2d(grad, factor, divisor_override=1) if factor > 1 else grad


def softmax_conv_bands(conv: nn.Module, scores: torch.Tensor, tau: float) -> torch.Tensor:
    """``conv(softmax(scores / tau))``, the softmax over the vocabulary (dim 1), for a frozen 1x1
    ``conv``, a band of rows at a time: the token probabilities, as large as the scores (134 MB
    at 512 px), are never whole. Per pixel, the same arithmetic as the full-size softmax."""
    n, _, height, width = scores.shape
    out = torch.empty(n, conv.w.shape[0], height, width, dtype=conv.w.dtype, device=scores.device).contiguous(
        memory_format=torch.channels_last)
    step = _band_rows(scores)
    for start in range(0, height, step):
        rows = slice(start, start + step)
        out[:, :, rows] = conv(softmax_over_vocabulary(scores[:, :, rows], tau))
    return out


def softmax_conv_input_grad(conv: nn.Module, grad: torch.Tensor, scores: torch.Tensor, tau: float) -> torch.Tensor:
    """The gradient of ``scores`` in ``softmax_conv_bands``, band by band, the probabilities
    recomputed; autograd's own softmax backward (``softmax_backward``), so the same arithmetic as
    the plain path."""
    result = torch.empty_like(scores, memory_format=torch.channels_last)
    step = _band_rows(scores)
    for start in range(0, scores.shape[2], step):
        rows = slice(start, start + step)
        probs = softmax_over_vocabulary(scores[:, :, rows], tau).permute(0, 2, 3, 1)   # vocabulary last
        grad_probs = conv_input_grad(conv, grad[:, :, rows]).to(probs.dtype).permute(0, 2, 3, 1)
        band = softmax_backward(grad_probs, probs, -1)
        result[:, :, rows] = band.permute(0, 3, 1, 2) / tau
    return result


class _DecodeKeepingMasks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tokens: torch.Tensor, tau: Optional[float], stages: Sequence[nn.Module]) -> torch.Tensor:
        masks, input_dtypes = ReluMasks(), []
        ctx.tau = tau
        if tau is not None:   # tokens are scores: their softmax and the first 1x1 convolution by bands
            ctx.save_for_backward(tokens)
            ctx.first = stages[0]
            x, stages = ctx.first.forward_from_scores(tokens, tau), stages[1:]
        else:
            x = tokens
        for stage in stages:
            input_dtypes.append(x.dtype)
            handed = [x]   # the stage takes x out and drops it when used (``Stage``)
            del x
            x = stage.forward_keeping_masks(handed, masks)
        ctx.stages, ctx.masks, ctx.input_dtypes = stages, masks, input_dtypes
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.masks is None:
            raise RuntimeError("the low-memory decoder's backward runs once: its masks are used up")
        grad = grad.clone(memory_format=torch.channels_last)   # stages may write into it; autograd's own stays
        for stage, dtype in zip(reversed(ctx.stages), reversed(ctx.input_dtypes)):
            handed = [grad]   # as in forward: the stage takes it out, and may write into it
            del grad
            grad = stage.input_grad(handed, ctx.masks).to(dtype)
        ctx.masks = None
        if ctx.tau is not None:
            scores, = ctx.saved_tensors
            grad = ctx.first.scores_grad(grad, scores, ctx.tau)
        return grad, None, None


def decode_keeping_masks(stages: Sequence[nn.Module], tokens: torch.Tensor, tau: Optional[float] = None) -> torch.Tensor:
    """Run ``stages`` on ``tokens`` keeping only their ReLU masks; backward by their ``input_grad``.

    With ``tau``, ``tokens`` are scores whose softmax over dim 1 is the decoder's input, and the
    first stage must take them (``InputConv.takes_scores``). Stages may write into their
    input (a residual sum): ``tokens`` itself is never written."""
    first_writes = tau is None and getattr(stages[0], "writes_input", True)
    return _DecodeKeepingMasks.apply(tokens.clone() if first_writes else tokens, tau, stages)
