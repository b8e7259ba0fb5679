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
    cut_pow: float = 1.0            # crop sides min + (1 - min) * u ** cut_pow: < 1 favours large crops
    overview: int = 0               # of the cutn views, how many show the whole image (all of them if cutn is fewer)
    tv_weight: float = 0.0          # total-variation penalty on the image: flat regions, clean edges
    ema: float = 0.0                # frames show an exponential average of the latents (decay per step); 0: off
    patience: int = 0               # stop when the judge's best frame is this many frames old; 0: never
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
        if not self.cut_pow > 0:
            raise ClipdrawError(f"cut-pow must be positive, got {self.cut_pow}")
        if not 0 <= self.ema < 1:
            raise ClipdrawError(f"ema must lie in [0, 1), got {self.ema}")
        for name in ("overview", "patience"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ClipdrawError(f"{name} must be a whole number >= 0, got {getattr(self, name)!r}")
        if not self.tv_weight >= 0:
            raise ClipdrawError(f"tv-weight must be >= 0, got {self.tv_weight}")
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


# The toy world's training stages, in order: the judge CLIP before the guide, which is the
# only one that meets the optimizer during training.
TOY_STAGES = ("dvae", "judge", "clip", "transformer")

# The toy world's defaults where they differ from the real world's: chosen by the judge's
# success rate in benchmarks/toy_success.py (docs/toy-guidance.md has the measurements).
TOY_DEFAULTS = dict(size=64, iters=300, cutn=16, save_every=10, relaxation="straight-through", cut_min_scale=0.8,
                    overview=4, tv_weight=0.1, ema=0.0)


def toy_config(**settings) -> GenerationConfig:
    """A GenerationConfig with the toy world's defaults, then ``settings``."""
    return GenerationConfig(**{**TOY_DEFAULTS, **settings})
