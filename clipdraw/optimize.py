"""The pseudo-DALL-E: optimize dVAE latent logits so the decoded image matches a prompt in CLIP.

    prompt -> text embeddings -> latents -> relaxation -> decoder -> image
           -> cutouts + augmentations -> CLIP -> loss -> Adam step

Everything here is one loop over those stages; models are loaded elsewhere (models.py) and
outputs written elsewhere (outputs.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .augment import DEFAULT_AUGMENTATIONS, Cutouts, parse_augmentations
from .errors import ClipdrawError
from .models import Models
from .prompts import Prompt, parse_prompts

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

    def __post_init__(self):
        self.augmentations = parse_augmentations(self.augmentations)
        for name in ("iters", "cutn", "size", "save_every"):
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


@dataclass
class Frame:
    """A snapshot of the image during optimization."""

    iteration: int
    image: Image.Image
    similarity: float   # CLIP cosine of the whole image with the positive prompts


@dataclass
class GenerationResult:
    prompt: str
    prompts: List[Prompt]
    config: GenerationConfig
    image: Image.Image
    frames: List[Frame]
    losses: List[float]
    similarities: List[float]     # per iteration, mean over cutouts
    iterations_done: int
    seconds: float
    interrupted: bool = False
    latents: Optional[torch.Tensor] = field(default=None, repr=False)

    @property
    def final_similarity(self) -> float:
        return self.frames[-1].similarity if self.frames else float("nan")

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(self.iterations_done, 1)

    def summary(self) -> dict:
        return {"prompt": self.prompt, "prompts": [asdict(p) for p in self.prompts], "seed": self.config.seed,
                "settings": asdict(self.config), "iterations_done": self.iterations_done,
                "interrupted": self.interrupted, "seconds": round(self.seconds, 3),
                "seconds_per_iteration": round(self.seconds_per_iteration, 5),
                "final_similarity": self.final_similarity}


# --------------------------------------------------------------------------- the stages


def relax(logits: torch.Tensor, config: GenerationConfig, step: int, generator: torch.Generator,
          noisy: bool = True) -> torch.Tensor:
    """Logits (B, vocab, g, g) -> token probabilities, normalised over the vocabulary axis (dim 1)."""
    if config.relaxation == "softmax":
        return F.softmax(logits / config.tau, dim=1)
    if config.relaxation == "gumbel":
        progress = step / max(config.iters - 1, 1)
        tau = config.tau * (config.tau_end / config.tau) ** progress   # exponential annealing
        if not noisy:
            return F.softmax(logits / tau, dim=1)
        uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
        gumbel = -torch.log((-torch.log(uniform.clamp_min(1e-10))).clamp_min(1e-10))
        return F.softmax((logits + gumbel) / tau, dim=1)
    soft = F.softmax(logits / config.tau, dim=1)   # straight-through: one-hot forward, soft gradient
    hard = F.one_hot(soft.argmax(dim=1), soft.shape[1]).permute(0, 3, 1, 2).to(soft.dtype)
    return hard + soft - soft.detach()


def prompt_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, weights: torch.Tensor,
                kind: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weighted loss over prompts (negative weights push away); also the positive similarity.

    image_embeds: (N, D) unit vectors; text_embeds: (P, D) unit vectors; weights: (P,).
    """
    cos = image_embeds @ text_embeds.T                            # (N, P)
    if kind == "cosine":
        per_prompt = -cos.mean(0)
    else:  # spherical: squared great-circle distance
        chord = (image_embeds.unsqueeze(1) - text_embeds.unsqueeze(0)).norm(dim=-1)
        per_prompt = 2 * torch.arcsin((chord / 2).clamp(max=1)).pow(2).mean(0)
    positive = weights.clamp(min=0)
    similarity = (cos.mean(0) * positive).sum() / positive.sum()
    return (per_prompt * weights).sum(), similarity


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> PIL RGB."""
    array = (image.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


# --------------------------------------------------------------------------- the loop


def generate(models: Models, prompt: str, config: Optional[GenerationConfig] = None,
             on_frame: Optional[Callable[[Frame], None]] = None, progress: bool = True) -> GenerationResult:
    """Optimize one image for ``prompt``; call ``on_frame`` every ``save_every`` iterations.

    Ctrl-C ends the loop early: the result (``interrupted=True``) holds what was done.
    Same seed, same device, same settings -> the same image (bit-identical on CPU).
    """
    config = config or GenerationConfig()
    prompts = parse_prompts(prompt)
    decoder, clip, device = models.decoder, models.clip, models.device
    if config.size % decoder.upsample_factor:
        raise ClipdrawError(f"size must be a multiple of {decoder.upsample_factor} for this decoder, got {config.size}")
    grid = config.size // decoder.upsample_factor

    cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):   # leave the caller's RNG state untouched
        torch.manual_seed(config.seed)
        generator = torch.Generator(device=device).manual_seed(config.seed)

        text_embeds = clip.encode_text([p.text for p in prompts])               # once per run
        weights = torch.tensor([p.weight for p in prompts], device=device)
        logits = (torch.randn(1, decoder.vocab_size, grid, grid, generator=generator, device=device)
                  * config.init_std).requires_grad_(True)
        optimizer = torch.optim.Adam([logits], lr=config.lr)
        schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.iters)
                    if config.lr_schedule == "cosine" else None)
        cutouts = Cutouts(clip.input_resolution, config.cutn, config.cut_min_scale, config.augmentations).to(device)

        @torch.no_grad()
        def snapshot(step: int) -> Frame:
            image = decoder(relax(logits, config, step, generator, noisy=False))
            similarity = (clip.encode_image(image) @ text_embeds.T)[0]
            positive = weights.clamp(min=0)
            return Frame(step, to_pil(image[0]), float((similarity * positive).sum() / positive.sum()))

        frames: List[Frame] = []
        losses, similarities = [], []
        interrupted, step = False, 0
        start = time.perf_counter()
        bar = tqdm(range(1, config.iters + 1), desc="optimizing", unit="it", disable=not progress,
                   dynamic_ncols=True, leave=True)
        try:
            for step in bar:
                tokens = relax(logits, config, step - 1, generator)            # latents -> tokens
                image = decoder(tokens)                                         # tokens -> image
                embeds = clip.encode_image(cutouts(image))                      # views -> CLIP
                loss, similarity = prompt_loss(embeds, text_embeds, weights, config.loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if schedule is not None:
                    schedule.step()
                losses.append(loss.detach())
                similarities.append(similarity.detach())
                if step % 10 == 0 or step == 1:   # reading the value syncs the device: not every step
                    bar.set_postfix(similarity=f"{similarity.item():.4f}")
                if step % config.save_every == 0 or step == config.iters:
                    frames.append(snapshot(step))
                    if on_frame:
                        on_frame(frames[-1])
        except KeyboardInterrupt:
            interrupted = True
            step = len(losses)
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        if step and (not frames or frames[-1].iteration != step):
            frames.append(snapshot(step))
            if on_frame:
                on_frame(frames[-1])
        if not frames:   # interrupted before the first step finished
            frames.append(snapshot(0))

    return GenerationResult(
        prompt=prompt, prompts=prompts, config=config, image=frames[-1].image, frames=frames,
        losses=[float(x) for x in torch.stack(losses).tolist()] if losses else [],
        similarities=[float(x) for x in torch.stack(similarities).tolist()] if similarities else [],
        iterations_done=len(losses), seconds=seconds, interrupted=interrupted, latents=logits.detach())
