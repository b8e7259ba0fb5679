"""The frozen dVAE encoder: an image in [0, 1] -> token logits, where an init image or an edit starts."""

from __future__ import annotations

import torch
from torch import nn

from .decoder import LOGIT_LAPLACE_EPS


def map_pixels(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [eps, 1 - eps]: the range dall_e's encoder was trained on (its logit-Laplace
    likelihood is undefined at 0 and 1)."""
    return (1 - 2 * LOGIT_LAPLACE_EPS) * images + LOGIT_LAPLACE_EPS


class DVAEEncoder(nn.Module):
    """dall_e's Encoder, frozen: (B, 3, H, W) in [0, 1] -> (B, vocab, H/8, W/8) token logits."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.vocab_size = int(encoder.vocab_size)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        first = next(self.encoder.parameters())
        return self.encoder(map_pixels(images).to(first.device, first.dtype)).float()

    @torch.no_grad()
    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The likeliest token of each cell, (B, H/8, W/8): what the decoder redraws the image from."""
        return self.logits(images).argmax(1)
