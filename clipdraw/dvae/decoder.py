"""The frozen dVAE decoder: token scores, relaxed, or token probabilities -> RGB in [0, 1]."""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .conv import HeldConv2d, hold_conv_weights
from .low_memory import decode_keeping_masks
from .relaxation import relaxed_tokens
from .stages import InputConv, Stage, decoder_stages, run_stages

LOGIT_LAPLACE_EPS = 0.1  # dall_e.utils.logit_laplace_eps: pixels live in [eps, 1 - eps]


def decoder_output_to_pixels(out: torch.Tensor) -> torch.Tensor:
    """dall_e decoder output -> image in [0, 1]: its first 3 channels are the logit-Laplace
    means, mapped back with unmap_pixels."""
    pixels = torch.sigmoid(out[:, :3].float())
    return ((pixels - LOGIT_LAPLACE_EPS) / (1 - 2 * LOGIT_LAPLACE_EPS)).clamp(0, 1)


class DVAEDecoder(nn.Module):
    """dall_e's Decoder, frozen, mapping (B, vocab, g, g) token probabilities to RGB in [0, 1].

    The wrapper takes the module over: its convolutions become ``HeldConv2d`` in place, and it
    runs them stage by stage (``decoder_stages``: the same modules regrouped, not registered twice).
    ``decode`` is the one way in from token scores, whatever the path: plain, low-memory, compiled.
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
                              and self.stages[0].takes_scores)
        self._compiled: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}   # by backend

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

    def decode(self, scores: torch.Tensor, tau: float = 1.0, relaxation: str = "softmax",
               low_memory: bool = False, compiler: Optional[str] = None) -> torch.Tensor:
        """The image of token scores (B, vocab, g, g), relaxed over the vocabulary (dim 1):
        'softmax', the probabilities ``softmax(scores / tau)``, or 'straight-through', their
        one-hot argmax forward and the softmax's gradient backward (``relaxed_tokens``).

        ``low_memory``: as in ``forward``; with 'softmax' the probabilities are never whole
        either: the softmax and the first (1x1) convolution run a band of rows at a time,
        forward and backward, from the scores, which the optimizer keeps anyway.

        ``compiler``: a ``torch.compile`` backend for the decoder (tokens -> image), compiled once
        per backend. Not with ``low_memory``: its bit-packing and hand-written backward are
        outside what torch.compile traces, so the low-memory decoder runs as it is, uncompiled,
        and a caller compiles what follows it.
        """
        if low_memory:
            if (relaxation == "softmax" and self.fuses_softmax and torch.is_grad_enabled()
                    and scores.requires_grad):
                return decoder_output_to_pixels(decode_keeping_masks(self.stages, self._checked(scores), tau))
            return self(relaxed_tokens(scores, tau, relaxation), low_memory=True)
        tokens = relaxed_tokens(scores, tau, relaxation)
        return self.compiled(compiler)(tokens) if compiler else self(tokens)

    def compiled(self, backend: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """``forward`` through ``torch.compile(backend=backend)``, made on first use and kept: the
        models are shared between runs, which then reuse its graphs."""
        if backend not in self._compiled:
            self._compiled[backend] = torch.compile(self, backend=backend)
        return self._compiled[backend]

    def forward(self, tokens: torch.Tensor, low_memory: bool = False) -> torch.Tensor:
        """Token probabilities -> image. ``low_memory``: keep a bit per ReLU value for backward,
        not the activations, and run backward by hand (``clipdraw.dvae.low_memory``).
        Recomputing stages instead, as an earlier version did, cost more time for a higher peak:
        at 512 px the last group's gradients set it once the kept activations are small."""
        tokens = self._checked(tokens)
        if low_memory and self.keeps_masks and torch.is_grad_enabled() and tokens.requires_grad:
            return decoder_output_to_pixels(decode_keeping_masks(self.stages, tokens))
        return decoder_output_to_pixels(run_stages(self.stages, tokens))

    def _checked(self, tokens: torch.Tensor) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 4 or tokens.shape[1] != self.vocab_size \
                or tokens.dtype != torch.float32:   # dall_e's own checks, said in one line
            from ..errors import InputError  # noqa: PLC0415

            got = (f"{tuple(tokens.shape)} {str(tokens.dtype).replace('torch.', '')}"
                   if isinstance(tokens, torch.Tensor) else type(tokens).__name__)
            raise InputError(f"the dVAE decoder takes float32 token probabilities shaped (batch, {self.vocab_size}, "
                             f"grid, grid), {self.vocab_size} being its vocabulary; got {got} (a decoder with "
                             "another vocabulary, or latents of another model?)")
        # Channels-last: oneDNN's convolutions skip their layout reorders on a CPU, cuDNN's
        # half-precision ones run on tensor cores.
        return tokens.contiguous(memory_format=torch.channels_last)

    def decode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hard token ids (B, g, g) -> image: what a transformer or the dVAE encoder emits."""
        return self(F.one_hot(tokens, self.vocab_size).permute(0, 3, 1, 2).float())
