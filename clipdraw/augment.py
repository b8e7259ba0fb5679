"""Cutouts and augmentations: many random views of one image, so that CLIP's gradient
favours what is in the picture rather than adversarial pixel patterns."""

from __future__ import annotations

from typing import Callable, Dict, Iterable

import torch
import torch.nn.functional as F
from torch import nn



def _kornia():
    import kornia.augmentation as K  # noqa: PLC0415  (slow import: only when augmenting)
    return K


# Each entry builds one kornia module; they compose in the order given. Names: config.AUGMENTATION_NAMES.
AUGMENTATIONS: Dict[str, Callable[[], nn.Module]] = {
    "affine": lambda: _kornia().RandomAffine(degrees=15, translate=(0.1, 0.1), p=0.7, padding_mode="border"),
    "perspective": lambda: _kornia().RandomPerspective(distortion_scale=0.4, p=0.7),
    "jitter": lambda: _kornia().ColorJitter(hue=0.01, saturation=0.01, p=0.7),
    "noise": lambda: _kornia().RandomGaussianNoise(std=0.05, p=0.5),
    "flip": lambda: _kornia().RandomHorizontalFlip(p=0.5),
}
def build_augmentations(names: Iterable[str]) -> nn.Module:
    names = tuple(names)
    return nn.Sequential(*(AUGMENTATIONS[n]() for n in names)) if names else nn.Identity()


class Cutouts(nn.Module):
    """``cutn`` random square crops per image, each resized to ``cut_size`` in one batched warp.

    Crop sides are ``min_scale + (1 - min_scale) * u ** cut_pow`` of the image side, u uniform
    in [0, 1]: ``cut_pow`` < 1 favours large crops, > 1 small ones. The first ``overview`` views
    of each image are the whole image, so that CLIP also judges the composition, not only
    details. One ``grid_sample`` does all crops at once.
    """

    def __init__(self, cut_size: int, cutn: int, min_scale: float = 0.5, augmentations: Iterable[str] = (),
                 cut_pow: float = 1.0, overview: int = 0):
        super().__init__()
        self.cut_size, self.cutn, self.min_scale = cut_size, cutn, min_scale
        self.cut_pow, self.overview = cut_pow, min(overview, cutn)
        self.augment = build_augmentations(augmentations)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.shape[0]
        n = batch * self.cutn
        device = images.device
        scale = self.min_scale + (1 - self.min_scale) * torch.rand(n, device=device) ** self.cut_pow
        if self.overview:
            scale.view(batch, self.cutn)[:, :self.overview] = 1.0
        # Centre of each crop, in [-1, 1] coordinates, so that the crop stays inside the image.
        centre = (torch.rand(n, 2, device=device) * 2 - 1) * (1 - scale).unsqueeze(1)
        theta = torch.zeros(n, 2, 3, device=device, dtype=images.dtype)
        theta[:, 0, 0] = scale
        theta[:, 1, 1] = scale
        theta[:, :, 2] = centre
        grid = F.affine_grid(theta, [n, images.shape[1], self.cut_size, self.cut_size], align_corners=False)
        source = images.repeat_interleave(self.cutn, dim=0)
        cutouts = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return self.augment(cutouts).clamp(0, 1)
