"""The pseudo-DALL-E: optimize dVAE latent logits so the decoded image matches a prompt in CLIP.

    prompt -> text embeddings -> latents -> relaxation -> decoder -> image
           -> cutouts + augmentations -> CLIP -> loss -> Adam step

Everything here is one loop over those stages; models are loaded elsewhere (models.py) and
outputs written elsewhere (outputs.py).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .augment import Cutouts
from .config import GenerationConfig
from .errors import ClipdrawError
from .models import Models
from .prompts import Prompt, parse_prompts

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


def gumbel_noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard Gumbel samples shaped like ``like``, from ``generator`` (reproducible by seed)."""
    uniform = torch.rand(like.shape, generator=generator, device=like.device)
    return -torch.log((-torch.log(uniform.clamp_min(1e-10))).clamp_min(1e-10))


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
        return F.softmax((logits + gumbel_noise(logits, generator)) / tau, dim=1)
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


class Optimization:
    """One image being optimized: its latent logits, their Adam state, and the frozen models
    that score them. Build it after seeding: it draws the initial latents."""

    def __init__(self, models: Models, prompts: List[Prompt], config: GenerationConfig):
        decoder, clip, device = models.decoder, models.clip, models.device
        if config.size % decoder.upsample_factor:
            raise ClipdrawError(f"size must be a multiple of {decoder.upsample_factor} for this decoder, "
                                f"got {config.size}")
        grid = config.size // decoder.upsample_factor
        self.models, self.config = models, config
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.text_embeds = clip.encode_text([p.text for p in prompts])            # once per run
        self.weights = torch.tensor([p.weight for p in prompts], device=device)
        self.logits = (torch.randn(1, decoder.vocab_size, grid, grid, generator=self.generator, device=device)
                       * config.init_std).requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.logits], lr=config.lr)
        self.schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, config.iters)
                         if config.lr_schedule == "cosine" else None)
        self.cutouts = Cutouts(clip.input_resolution, config.cutn, config.cut_min_scale,
                               config.augmentations).to(device)

    def step(self, step: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """One iteration (1-based); returns (loss, similarity) as device tensors, unsynchronised."""
        tokens = relax(self.logits, self.config, step - 1, self.generator)      # latents -> tokens
        image = self.models.decoder(tokens)                                      # tokens -> image
        embeds = self.models.clip.encode_image(self.cutouts(image))              # views -> CLIP
        loss, similarity = prompt_loss(embeds, self.text_embeds, self.weights, self.config.loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step()
        return loss.detach(), similarity.detach()

    @torch.no_grad()
    def snapshot(self, step: int) -> Frame:
        """The current image without sampling noise, and CLIP's similarity of the whole of it."""
        image = self.models.decoder(relax(self.logits, self.config, step, self.generator, noisy=False))
        cos = (self.models.clip.encode_image(image) @ self.text_embeds.T)[0]
        positive = self.weights.clamp(min=0)
        return Frame(step, to_pil(image[0]), float((cos * positive).sum() / positive.sum()))


def generate(models: Models, prompt: str, config: Optional[GenerationConfig] = None,
             on_frame: Optional[Callable[[Frame], None]] = None, progress: bool = True) -> GenerationResult:
    """Optimize one image for ``prompt``; call ``on_frame`` every ``save_every`` iterations.

    Ctrl-C ends the loop early: the result (``interrupted=True``) holds what was done.
    Same seed, same device, same settings -> the same image (bit-identical on CPU).
    """
    config = config or GenerationConfig()
    prompts = parse_prompts(prompt)
    device = models.device
    cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):   # leave the caller's RNG state untouched
        torch.manual_seed(config.seed)
        run = Optimization(models, prompts, config)
        frames: List[Frame] = []
        losses, similarities = [], []

        def keep(frame: Frame) -> None:
            frames.append(frame)
            if on_frame:
                on_frame(frame)

        interrupted = False
        start = time.perf_counter()
        bar = tqdm(range(1, config.iters + 1), desc="optimizing", unit="it", disable=not progress,
                   dynamic_ncols=True, leave=True)
        try:
            for step in bar:
                loss, similarity = run.step(step)
                losses.append(loss)
                similarities.append(similarity)
                if step % 10 == 0 or step == 1:   # reading the value syncs the device: not every step
                    bar.set_postfix(similarity=f"{similarity.item():.4f}")
                if step % config.save_every == 0 or step == config.iters:
                    keep(run.snapshot(step))
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        done = len(losses)
        if not frames or frames[-1].iteration != done:   # what an interruption left unsaved
            keep(run.snapshot(done))

    return GenerationResult(
        prompt=prompt, prompts=prompts, config=config, image=frames[-1].image, frames=frames,
        losses=torch.stack(losses).tolist() if losses else [],
        similarities=torch.stack(similarities).tolist() if similarities else [],
        iterations_done=done, seconds=seconds, interrupted=interrupted, latents=run.logits.detach())
