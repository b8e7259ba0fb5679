"""Where each object of a relation prompt goes: "A above B" as two half-pictures.

A guide asked for "a red circle above a blue square" as a whole tends to draw one blob, or two
that touch, or the two the wrong way round: the relation is a small part of what the caption's
embedding says. A picture of "A above B", with its bottom half painted over, is a picture of
"A on the top"; with its top half painted over, one of "B on the bottom". The optimizer is
asked for those two pictures as well (``GenerationConfig.region_weight``), so that each half
holds its own object. The painted-over half shows the run's start image (the toy world's blank
canvas), or plain grey when the run starts from noise. Measured in docs/toy-guidance.md
("Each object in its half").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from .prompts import Prompt
from .targets import Targets, build_targets

# the relation words a prompt may join two objects with, and where each object then goes
_RELATION_WORDS = {"above": ("top", "bottom"), "below": ("bottom", "top"),
                   "left of": ("left", "right"), "right of": ("right", "left")}
_RELATION = re.compile(r"\s(?:to the\s)?(above|below|left of|right of)\s")
GREY = 0.5   # what a painted-over half shows when the run has no start image


@dataclass(frozen=True)
class Region:
    """One object of a relation prompt: its words, said with where it goes ("a red circle on the
    top"), and that half of the picture (``position``: top, bottom, left or right)."""

    text: str
    position: str


def relation_regions(text: str) -> List[Region]:
    """The two regions of a prompt "A <relation> B" (relation: above, below, left of, right of,
    optionally after "to the"); none for a prompt without exactly one relation word."""
    found = list(_RELATION.finditer(text))
    if len(found) != 1:
        return []
    match = found[0]
    first, second = text[:match.start()].strip(), text[match.end():].strip().rstrip(".")
    if not first or not second:
        return []
    where_first, where_second = _RELATION_WORDS[match.group(1)]
    return [Region(f"{first} on the {where_first}", where_first), Region(f"{second} on the {where_second}", where_second)]


def half_mask(position: str, size: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """(1, 1, size, size): 1 on ``position``'s half of a ``size`` square picture, 0 elsewhere."""
    mask = torch.zeros(1, 1, size, size, device=device)
    half = size // 2
    rows, cols = {"top": (slice(0, half), slice(None)), "bottom": (slice(half, None), slice(None)),
                  "left": (slice(None), slice(0, half)), "right": (slice(None), slice(half, None))}[position]
    mask[..., rows, cols] = 1
    return mask


@dataclass
class RegionTarget:
    """A region's half (``mask``), what the rest of its half-picture shows (``painted``, the
    fill outside the mask, computed once), its weight in the loss, and what the guide should
    see there (``targets``)."""

    mask: torch.Tensor
    painted: torch.Tensor
    weight: float
    targets: Targets

    def shown(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (B, 3, H, W) with everything outside the region painted over."""
        return images * self.mask + self.painted


def half_picture(position: str, fill: torch.Tensor, weight: float, targets: Targets) -> RegionTarget:
    """The region of ``position``'s half, the other half painted with ``fill`` (3, H, W)."""
    mask = half_mask(position, fill.shape[-1], fill.device)
    return RegionTarget(mask, fill * (1 - mask), weight, targets)


def region_targets(clip, prompts: Sequence[Prompt], size: int, weight: float, start: Optional[torch.Tensor] = None,
                   device: Optional[torch.device] = None) -> List[RegionTarget]:
    """The guide's region targets for the positive ``prompts`` that state a relation, each
    region weighted ``weight`` times its prompt's weight, the other half painted with the run's
    ``start`` image (3, size, size), or grey without one; none when ``weight`` is 0."""
    found = []
    if not weight:
        return found
    fill = start if start is not None else torch.full((3, size, size), GREY, device=device)
    for prompt in prompts:
        if prompt.weight <= 0:
            continue
        for region in relation_regions(prompt.text):
            found.append(half_picture(region.position, fill, weight * prompt.weight,
                                      build_targets(clip, [Prompt(region.text)])))
    return found
