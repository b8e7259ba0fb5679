"""Every engine's settings, defaults and checks, written once and kept free of torch so that the
command line reads them (its options, defaults and help) without loading anything.

- ``GenerationConfig``: the optimizer (``clipdraw.engines.optimize``); the toy world's
  defaults where they differ are ``TOY_DEFAULTS``;
- ``SamplingConfig``: the transformer (``clipdraw.engines.transformer``);
- ``DalleMiniConfig``: dalle-mini (``clipdraw.engines.dallemini``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, List, Optional, Tuple, Union

from .errors import ClipdrawError

AUGMENTATION_NAMES = ("affine", "perspective", "jitter", "noise", "flip")
DEFAULT_AUGMENTATIONS: Tuple[str, ...] = ("affine", "perspective", "jitter", "noise")
RELAXATIONS = ("softmax", "gumbel", "straight-through")
LOSSES = ("cosine", "spherical")
LR_SCHEDULES = ("constant", "cosine")
EDIT_METHODS = ("direction", "slerp")
DEFAULT_CLIP = "ViT-B/32"    # the guiding CLIP, by name (clipdraw.weights resolves names and paths)
DEFAULT_DECODER = "openai"   # OpenAI's dVAE decoder
DEFAULT_ENCODER = "openai"   # OpenAI's dVAE encoder: only init images and edits load it
DALLEMINI_DTYPES = ("float32", "float16", "bfloat16")
DALLEMINI_IMAGE_VOCAB = 2 ** 14   # VQGAN codebook; the decoder samples among its first 2**14 logits
DALLEMINI_MAX_GRID = 8            # 64 images in one pass; memory grows with grid**2
MAX_SEED = 2 ** 63 - 1            # a signed 64-bit integer: what torch, numpy and JAX all take


def check_seed(seed, count: int = 1) -> None:
    """One ClipdrawError line unless seeds ``seed`` .. ``seed + count - 1`` are whole numbers
    from 0 to MAX_SEED (a larger one fails deep inside torch's generator)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED - (count - 1):
        batch = f" (with --batch {count}, at most 2**63 - {count}: the batch's seeds run to seed + {count - 1})" \
            if count > 1 else ""
        raise ClipdrawError(f"seed must be a whole number from 0 to 2**63 - 1{batch}, got {seed!r}")


def check_positive(name: str, value) -> None:
    """One ClipdrawError line unless ``value`` is a finite number above 0 (NaN and inf refused)."""
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
        raise ClipdrawError(f"{name} must be positive (and finite), got {value}")


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
    region_weight: float = 0.0      # "A above B": also "A on the top" of the top half alone, and so on (regions.py); 0: off
    region_cuts: int = 8            # cutouts of each half-picture per step, beside the cutn of the whole
    shape_weight: float = 0.0       # also the prompt without its colour words, asked of the picture's silhouette (shapes.py); 0: off
    shape_cuts: int = 4             # cutouts of the silhouette per step (shape_weight)
    ema: float = 0.0                # frames show an exponential average of the latents (decay per step); 0: off
    patience: int = 0               # stop when the judge's best frame is this many frames old; 0: never
    pick_flatness: float = 0.0      # the judge's ranking minus this times off-colour, stray and missing foreground
    pick_objects: float = 0.0       # two-object prompts: plus this times judge's and guide's reading of each object alone
    pick_from: float = 0.0          # the judge picks among frames from this share of the run on (earlier: if none later)
    init_std: float = 1.0           # std of the initial logits
    save_every: int = 50
    batch: int = 1                  # images optimized at once, seeds seed, seed+1, ...: one decoder pass for all
    candidates: int = 1             # latents optimized side by side for each image; the judge keeps the best
    init_image: Optional[str] = None   # start from this image's dVAE tokens; frame 0 is its redraw
    init_scale: float = 10.0        # how firmly: the logit gap between the image's token and the others
    init_weight: float = 0.0        # pixel MSE to the init image, pulling the run back toward it
    image_prompts: Tuple[str, ...] = ()   # "PATH[:WEIGHT]": CLIP image embeddings as targets beside the text
    edit_from: Optional[str] = None    # an edit of init_image: the caption it moves from (the prompt: to)
    edit_method: str = "direction"  # StyleGAN-NADA's directional loss, or DALL-E 2's slerp target
    edit_strength: float = 1.0      # direction: the loss's weight; slerp: how far toward the text difference
    compile: bool = False           # torch.compile the decoder and CLIP's image encoder (low_memory: CLIP's alone)
    low_memory: bool = False        # a bit per decoder ReLU value, not its activations; recompute CLIP's

    def __post_init__(self):
        self.augmentations = parse_augmentations(self.augmentations)
        self.image_prompts = (self.image_prompts,) if isinstance(self.image_prompts, str) else tuple(self.image_prompts)
        self._check_inputs()
        for name in ("iters", "cutn", "size", "save_every", "batch", "candidates", "region_cuts", "shape_cuts"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ClipdrawError(f"{name.replace('_', '-')} must be a positive whole number, got {value!r}")
        if self.size % 8:
            raise ClipdrawError(f"size must be a multiple of 8 (the dVAE decoder upsamples 8x), got {self.size}")
        check_seed(self.seed, self.batch)
        for name in ("lr", "tau", "tau_end", "cut_pow"):
            check_positive(name.replace("_", "-"), getattr(self, name))
        if not 0 < self.cut_min_scale <= 1:
            raise ClipdrawError(f"cut-min-scale must lie in (0, 1], got {self.cut_min_scale}")
        if not 0 <= self.ema < 1:
            raise ClipdrawError(f"ema must lie in [0, 1), got {self.ema}")
        if not 0 <= self.pick_from < 1:
            raise ClipdrawError(f"pick-from must lie in [0, 1), got {self.pick_from}")
        for name in ("overview", "patience"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ClipdrawError(f"{name} must be a whole number >= 0, got {getattr(self, name)!r}")
        for name in ("tv_weight", "pick_flatness", "pick_objects", "region_weight", "shape_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ClipdrawError(f"{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name, allowed in (("relaxation", RELAXATIONS), ("loss", LOSSES), ("lr_schedule", LR_SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise ClipdrawError(f"unknown {name.replace('_', '-')} {getattr(self, name)!r}: expected one of {', '.join(allowed)}")

    @property
    def first_pick(self) -> int:
        """The first iteration whose frame the judge may pick: the early frames of a run, objects
        still small and ragged, can outscore the finished drawing with a judge that forgives both."""
        return round(self.pick_from * self.iters)

    def _check_inputs(self) -> None:
        """The images a run starts from or aims at, and edits."""
        if not (math.isfinite(self.init_scale) and self.init_scale > 0):
            raise ClipdrawError(f"init-scale must be positive, got {self.init_scale}")
        if not (math.isfinite(self.init_weight) and self.init_weight >= 0):
            raise ClipdrawError(f"init-weight must be >= 0, got {self.init_weight}")
        if self.init_weight and not self.init_image:
            raise ClipdrawError("--init-weight keeps the image close to --init-image: give --init-image too")
        if self.edit_method not in EDIT_METHODS:
            raise ClipdrawError(f"unknown edit method {self.edit_method!r}: expected one of {', '.join(EDIT_METHODS)}")
        if not (math.isfinite(self.edit_strength) and self.edit_strength >= 0):
            raise ClipdrawError(f"edit strength must be a finite number >= 0, got {self.edit_strength}")
        if self.edit_from is not None and not self.init_image:
            raise ClipdrawError("an edit needs the image it edits: clipdraw edit IMAGE --from TEXT --to TEXT")
        if self.edit_from is not None and not self.edit_from.strip():
            raise ClipdrawError("--from is empty: give the caption the image moves away from")


def parse_augmentations(spec: Union[str, Iterable[str]]) -> Tuple[str, ...]:
    """``"affine,noise"`` -> ("affine", "noise"); ``"none"`` or ``""`` -> ()."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n and n != "none"]
    unknown = [n for n in names if n not in AUGMENTATION_NAMES]
    if unknown:
        raise ClipdrawError(f"unknown augmentation {unknown[0]!r}: expected some of "
                            f"{', '.join(AUGMENTATION_NAMES)} or none")
    return tuple(dict.fromkeys(names))


def clip_model_names(spec: str) -> List[str]:
    """``"ViT-B/32, ViT-B/16"`` -> ["ViT-B/32", "ViT-B/16"]: the guiding CLIPs, each named once."""
    names = list(dict.fromkeys(part.strip() for part in spec.split(",") if part.strip()))
    if not names:
        raise ClipdrawError(f"--clip-model names no CLIP: {spec!r}")
    return names


# The toy world's training stages, in order: the guide CLIP before the judge, which learns to
# rank the guide's drawings (clipdraw.toy.train_clip.train_judge).
TOY_STAGES = ("dvae", "clip", "judge", "transformer")

# The toy world's defaults where they differ from the real world's: chosen by the judge's
# success rate in benchmarks/toy_success.py (docs/toy-guidance.md has the measurements). A toy
# run starts from the empty canvas (the blank scene's dVAE tokens, over the usual noise), and
# its frames are ranked with the flatness prior of clipdraw.picking (and, for two objects, each
# object read alone), from a third of the run on, among four candidates drawn side by side,
# each through fewer views.
TOY_BLANK = str(Path(__file__).parent / "toy" / "blank.png")
TOY_DEFAULTS = dict(size=64, iters=300, candidates=4, cutn=4, save_every=10, relaxation="straight-through",
                    cut_min_scale=0.8, overview=1, tv_weight=0.1, ema=0.0, pick_flatness=20.0, pick_objects=1.0,
                    pick_from=0.33, init_image=TOY_BLANK, init_scale=3.0, region_weight=1.0, region_cuts=2)


REAL_MODEL_OPTIONS = ("clip_model", "decoder", "encoder")   # name real weights; the toy world has its own


def toy_config(**settings) -> GenerationConfig:
    """A GenerationConfig with the toy world's defaults, then ``settings``. An init image given
    replaces the blank canvas, and holds at the general ``init_scale`` unless one is given: the
    toy's low scale suits an empty start, which the optimizer should paint over."""
    defaults = dict(TOY_DEFAULTS)
    if settings.get("init_image") is not None:
        defaults.pop("init_scale")
    return GenerationConfig(**{**defaults, **settings})


@dataclass
class SamplingConfig:
    """Settings of one autoregressive sample."""

    seed: int = 0
    temperature: float = 1.0
    top_k: int = 32
    save_every: Optional[int] = None   # image tokens between saved frames; None: one row of the token grid

    def __post_init__(self):
        check_seed(self.seed)
        check_positive("temperature", self.temperature)
        if self.top_k < 0 or (self.save_every is not None and self.save_every <= 0):
            raise ClipdrawError("top-k must be >= 0 and save-every positive")


def parse_rerank(spec: Union[str, Tuple[int, int], List[int], None]) -> Optional[Tuple[int, int]]:
    """``"16:4"`` -> (16, 4): draw 16 candidates, keep the 4 that CLIP ranks best."""
    if spec is None:
        return None
    if isinstance(spec, str):
        parts = spec.split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ClipdrawError(f"rerank {spec!r} is not n:k (e.g. 16:4: draw 16 candidates, keep the best 4)")
        spec = (int(parts[0]), int(parts[1]))
    n, k = spec
    if not (isinstance(n, int) and isinstance(k, int) and 1 <= k <= n):
        raise ClipdrawError(f"rerank n:k needs 1 <= k <= n, got {n}:{k}")
    return (n, k)


@dataclass
class DalleMiniConfig:
    """Settings of one dalle-mini run (recorded whole in run.json)."""

    seed: int = 0
    mega: bool = False                 # dalle-mega (2.6B parameters) instead of dalle-mini
    grid: int = 1                      # images drawn at once: a grid x grid batch per pass
    top_k: int = 256                   # sample among the k likeliest tokens (0: all)
    temperature: float = 1.0
    supercondition: float = 16.0       # classifier-free guidance: weight of the prompt over no prompt
    dtype: str = "float32"             # of the BART encoder and decoder; float16/bfloat16 need CUDA
    rerank: Optional[Tuple[int, int]] = None   # (n, k): n candidates, best k by CLIP; "n:k" accepted
    progressive: bool = True           # decode every 32 tokens for frames (7 more VQGAN passes per pass)

    def __post_init__(self):
        self.rerank = parse_rerank(self.rerank)
        check_seed(self.seed)
        if not isinstance(self.grid, int) or not 1 <= self.grid <= DALLEMINI_MAX_GRID:
            raise ClipdrawError(f"grid must be a whole number from 1 to {DALLEMINI_MAX_GRID}, got {self.grid!r}")
        if not isinstance(self.top_k, int) or not 0 <= self.top_k <= DALLEMINI_IMAGE_VOCAB:
            raise ClipdrawError(f"top-k must be from 0 (all) to {DALLEMINI_IMAGE_VOCAB}, got {self.top_k!r}")
        check_positive("temperature", self.temperature)
        if not (math.isfinite(self.supercondition) and self.supercondition >= 0):
            raise ClipdrawError(f"supercondition must be 0 or more, got {self.supercondition}")
        if self.dtype not in DALLEMINI_DTYPES:
            raise ClipdrawError(f"unknown dtype {self.dtype!r}: expected one of {', '.join(DALLEMINI_DTYPES)}")
        per_pass = self.grid ** 2
        if self.rerank and self.rerank[0] % per_pass:
            raise ClipdrawError(f"rerank {self.rerank[0]}:{self.rerank[1]} with grid {self.grid}: n must be a "
                                f"multiple of {per_pass} (each pass draws a {self.grid}x{self.grid} grid)")

    @property
    def variant(self) -> str:
        return "mega" if self.mega else "mini"

    @property
    def candidates(self) -> int:
        return self.rerank[0] if self.rerank else self.grid ** 2

    @property
    def keep(self) -> int:
        return self.rerank[1] if self.rerank else self.grid ** 2

    @property
    def passes(self) -> int:
        return self.candidates // self.grid ** 2


# --------------------------------------------------------------------------- engines and their options

ENGINE_SETTINGS = {"optimize": GenerationConfig, "transformer": SamplingConfig, "dallemini": DalleMiniConfig}
ENGINE_NAMES: Tuple[str, ...] = tuple(ENGINE_SETTINGS)
# Which models each engine loads, as ``clipdraw.engines.ModelSource`` fields the user may set.
SOURCE_OPTIONS = {"optimize": ("clip_model", "decoder", "encoder", "judge_model", "dtype"),
                  "transformer": ("clip_model", "decoder", "transformer"),
                  "dallemini": ("clip_model",)}
# everyone's; the API's alone; follows --gif; set by ``clipdraw edit`` (IMAGE --from TEXT --method --strength)
NOT_OPTIONS = ("seed", "init_std", "progressive", "edit_from", "edit_method", "edit_strength")


def engine_options(name: str) -> Tuple[str, ...]:
    """The options engine ``name`` takes besides everyone's: its settings' fields and the
    models it loads, named as the fields they set (``--cut-min-scale`` sets ``cut_min_scale``)."""
    own = tuple(f.name for f in fields(ENGINE_SETTINGS[name]) if f.name not in NOT_OPTIONS)
    return tuple(dict.fromkeys(own + SOURCE_OPTIONS[name]))


def engine_settings(name: str, model: str = "openai", **given):
    """Engine ``name``'s settings in world ``model`` (openai or toy): its defaults, the toy
    world's where it has its own, then ``given``; checked (one ClipdrawError line)."""
    if name not in ENGINE_SETTINGS:
        raise ClipdrawError(f"unknown engine {name!r}: expected one of {', '.join(ENGINE_NAMES)}")
    if name == "optimize" and model == "toy":
        return toy_config(**given)
    return ENGINE_SETTINGS[name](**given)
