"""Settings of one generation, kept free of torch so the command line can read defaults fast."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Tuple, Union

from .errors import ClipdrawError

AUGMENTATION_NAMES = ("affine", "perspective", "jitter", "noise", "flip")
DEFAULT_AUGMENTATIONS: Tuple[str, ...] = ("affine", "perspective", "jitter", "noise")
RELAXATIONS = ("softmax", "gumbel", "straight-through")
LOSSES = ("cosine", "spherical")
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class GenerationConfig:
    """Every setting of one optimization run (recorded whole in run.json)."""

    iters: int = 1000
    seed: int = 0
    size: int = 256                 # output side in pixels; the latent grid is size / 8
    cutn: int = 32                  # cutouts scored by CLIP per step
    lr: float = 0.1
    lr_schedule: str = "constant"   # or "cosine" decay to 0
    relaxation: str = "softmax"     # over the vocabulary axis
    tau: float = 1.0                # softmax temperature; gumbel anneals tau -> tau_end
    tau_end: float = 0.1
    loss: str = "cosine"            # or "spherical" (great-circle distance squared)
    augmentations: Tuple[str, ...] = DEFAULT_AUGMENTATIONS
    cut_min_scale: float = 0.5
    init_std: float = 1.0           # std of the initial logits
    save_every: int = 50
    batch: int = 1                  # images optimized at once, seeds seed, seed+1, ...: one decoder pass for all
    compile: bool = False           # torch.compile the decoder and CLIP's image encoder (slow start, faster steps)
    low_memory: bool = False        # a bit per decoder ReLU value, not its activations; recompute CLIP's

    def __post_init__(self):
        self.augmentations = parse_augmentations(self.augmentations)
        for name in ("iters", "cutn", "size", "save_every", "batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ClipdrawError(f"{name.replace('_', '-')} must be a positive whole number, got {value!r}")
        if self.size % 8:
            raise ClipdrawError(f"size must be a multiple of 8 (the dVAE decoder upsamples 8x), got {self.size}")
        if not self.lr > 0:
            raise ClipdrawError(f"lr must be positive, got {self.lr}")
        if not (self.tau > 0 and self.tau_end > 0):
            raise ClipdrawError("tau and tau-end must be positive")
        if not 0 < self.cut_min_scale <= 1:
            raise ClipdrawError(f"cut-min-scale must lie in (0, 1], got {self.cut_min_scale}")
        for name, allowed in (("relaxation", RELAXATIONS), ("loss", LOSSES), ("lr_schedule", LR_SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise ClipdrawError(f"unknown {name.replace('_', '-')} {getattr(self, name)!r}: expected one of {', '.join(allowed)}")


def parse_augmentations(spec: Union[str, Iterable[str]]) -> Tuple[str, ...]:
    """``"affine,noise"`` -> ("affine", "noise"); ``"none"`` or ``""`` -> ()."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n and n != "none"]
    unknown = [n for n in names if n not in AUGMENTATION_NAMES]
    if unknown:
        raise ClipdrawError(f"unknown augmentation {unknown[0]!r}: expected some of "
                            f"{', '.join(AUGMENTATION_NAMES)} or none")
    return tuple(dict.fromkeys(names))
