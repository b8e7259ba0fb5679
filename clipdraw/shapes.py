"""The picture's shapes read apart from its colours: a silhouette asked for the prompt without
its colour words.

A guide that learnt colour-shape pairs together can tie a shape to the colours it saw it in:
the toy guide never saw a blue square, and reads a rendered blue square as "a blue circle",
so "a blue square" pulls the optimizer toward a blue blob. Taught on silhouettes with
colourless captions as well (``TrainConfig.clip_silhouettes``), it reads the silhouette of a
blue square as "a square". So the optimizer is also asked for a silhouette of its picture
(each pixel ink as far as it differs from the ground, differentiably) to match the prompt
with its colour words taken out (``GenerationConfig.shape_weight``). Only a guide taught
silhouettes reads them; for others this term says nothing useful, and it is off by default.
Measured in docs/toy-guidance.md ("Silhouettes in the loss").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from .prompts import Prompt
from .targets import Targets, build_targets

COLOUR_WORDS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white",
                "grey", "gray")
SILHOUETTE_INK = (60, 60, 60)   # the one colour of every shape in a silhouette, 0..255 (the toy guide's training too)
FULL_INK_DISTANCE = 0.3   # RGB distance from the ground (pixels in [0, 1]) at which a pixel is all ink
_COLOURS = re.compile(rf"\b(?:{'|'.join(COLOUR_WORDS)})\s+", re.IGNORECASE)


def without_colour_words(text: str) -> str:
    """``text`` with its colour words taken out: "a red circle above a blue square" -> "a circle
    above a square" (as the toy world captions its silhouettes)."""
    return _COLOURS.sub("", text)


def soft_silhouettes(images: torch.Tensor, ground: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> silhouettes: each pixel the ``ground`` (3, H, W or B, 3, H, W)
    where it equals it, ink from ``FULL_INK_DISTANCE`` away, in between in proportion, so that
    the gradient reaches every pixel that is not yet all ink or all ground."""
    ink = torch.tensor(SILHOUETTE_INK, dtype=images.dtype, device=images.device).view(1, 3, 1, 1) / 255
    share = ((images - ground).norm(dim=1, keepdim=True) / FULL_INK_DISTANCE).clamp(max=1)
    return ground + share * (ink - ground)


def border_ground(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, 1, 1): the median colour of each image's border, as the ground of a
    run with no start image (no gradient flows through it)."""
    images = images.detach()
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], dim=-1)
    return border.median(dim=-1).values[..., None, None]


@dataclass
class ShapeTarget:
    """What the guide should read on the picture's silhouette (``targets``: the prompts without
    their colour words), with its weight in the loss, on ``ground`` (the run's start image, or
    None: each picture's border colour)."""

    targets: Targets
    weight: float
    ground: Optional[torch.Tensor]

    def shown(self, images: torch.Tensor) -> torch.Tensor:
        return soft_silhouettes(images, self.ground if self.ground is not None else border_ground(images))


def shape_targets(clip, prompts: Sequence[Prompt], weight: float, start: Optional[torch.Tensor] = None
                  ) -> List[ShapeTarget]:
    """The guide's silhouette target for the positive ``prompts`` that name a colour, each
    without its colour words (one target for all, weighted as the prompts are); none when
    ``weight`` is 0 or no prompt names a colour."""
    kept = [Prompt(without_colour_words(p.text), p.weight) for p in prompts
            if p.weight > 0 and without_colour_words(p.text) != p.text]
    if not weight or not kept:
        return []
    return [ShapeTarget(build_targets(clip, kept), weight, start)]
