"""The pseudo-DALL-E: optimize dVAE latent logits so the decoded image matches a prompt in CLIP.

    prompt -> text embeddings -> latents -> relaxation -> decoder -> image
           -> cutouts + augmentations -> CLIP -> loss -> Adam step

Everything here is one loop over those stages; models are loaded elsewhere (models.py) and
outputs written elsewhere (outputs.py). The loop runs ``config.batch`` images at once, one
row of latents each, so that one decoder pass and one CLIP pass serve them all.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, ContextManager, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .augment import Cutouts
from .config import GenerationConfig
from .errors import ClipdrawError
from .models import Models, softmax_over_vocabulary
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
    batch_index: Optional[int] = None   # place in a batched run (config.batch > 1), whose seconds it shares

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
                "final_similarity": self.final_similarity,
                **({"batch_index": self.batch_index} if self.batch_index is not None else {})}


# --------------------------------------------------------------------------- the stages


def gumbel_noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard Gumbel samples shaped like ``like``, from ``generator`` (reproducible by seed)."""
    uniform = torch.rand(like.shape, generator=generator, device=like.device)
    return -torch.log((-torch.log(uniform.clamp_min(1e-10))).clamp_min(1e-10))


Generators = Union[torch.Generator, Sequence[torch.Generator]]


def tempered_scores(logits: torch.Tensor, config: GenerationConfig, step: int, generators: Generators,
                    noisy: bool = True) -> Tuple[torch.Tensor, float]:
    """The relaxation as (scores, tau): the token probabilities are ``softmax(scores / tau)``
    over the vocabulary axis (dim 1) of (B, vocab, g, g) scores.

    ``generators``: one per image (row of ``logits``), so that an image's noise does not depend
    on what it is batched with, or one for all rows.
    """
    if config.relaxation != "gumbel":
        return logits, config.tau
    progress = step / max(config.iters - 1, 1)
    tau = config.tau * (config.tau_end / config.tau) ** progress   # exponential annealing
    if not noisy:
        return logits, tau
    if isinstance(generators, torch.Generator):
        noise = gumbel_noise(logits, generators)
    else:
        noise = torch.cat([gumbel_noise(row, g) for row, g in zip(logits.split(1), generators)])
    return logits + noise, tau


def relax(logits: torch.Tensor, config: GenerationConfig, step: int, generators: Generators,
          noisy: bool = True) -> torch.Tensor:
    """Logits (B, vocab, g, g) -> token probabilities, normalised over the vocabulary axis (dim 1)."""
    scores, tau = tempered_scores(logits, config, step, generators, noisy)
    soft = softmax_over_vocabulary(scores / tau)
    if config.relaxation != "straight-through":
        return soft
    hard = F.one_hot(soft.argmax(dim=1), soft.shape[1]).permute(0, 3, 1, 2).to(soft.dtype)
    return hard + soft - soft.detach()   # one-hot forward, soft gradient


def prompt_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, weights: torch.Tensor,
                kind: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weighted loss over prompts (negative weights push away); also the positive similarity.

    image_embeds: (..., N, D) unit vectors, N views of each image; text_embeds: (P, D) unit
    vectors; weights: (P,). Returns loss and similarity shaped (...): one per image.
    """
    cos = image_embeds @ text_embeds.T                            # (..., N, P)
    if kind == "cosine":
        per_prompt = -cos.mean(-2)
    else:  # spherical: squared great-circle distance
        chord = (image_embeds.unsqueeze(-2) - text_embeds).norm(dim=-1)
        per_prompt = 2 * torch.arcsin((chord / 2).clamp(max=1)).pow(2).mean(-2)
    positive = weights.clamp(min=0)
    similarity = (cos.mean(-2) * positive).sum(-1) / positive.sum()
    return (per_prompt * weights).sum(-1), similarity


def clip_autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """float16 on CUDA, where CLIP was trained in half precision and tensor cores run it
    several times faster; None (no autocast) elsewhere: the CPU computes CLIP in float32."""
    return torch.float16 if device.type == "cuda" else None


COMPILE_BACKEND = "inductor"   # the tests swap in "aot_eager": the same tracing without a C++ build


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> PIL RGB."""
    array = (image.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy())
    return Image.fromarray(np.ascontiguousarray(array), "RGB")


# --------------------------------------------------------------------------- the loop


class Optimization:
    """``config.batch`` images being optimized together: their latent logits (one row each),
    the Adam state, and the frozen models that score them. Build it after seeding: it draws
    the initial latents, row i from seed + i exactly as a run of that seed alone would.

    ``init_logits`` (vocab, g, g), or (batch, vocab, g, g), replaces the random start: for
    example a scene's dVAE tokens one-hot and scaled, to see whether CLIP keeps a correct image
    or pulls it elsewhere."""

    def __init__(self, models: Models, prompts: List[Prompt], config: GenerationConfig,
                 init_logits: Optional[torch.Tensor] = None):
        decoder, clip, device = models.decoder, models.clip, models.device
        if config.size % decoder.upsample_factor:
            raise ClipdrawError(f"size must be a multiple of {decoder.upsample_factor} for this decoder, "
                                f"got {config.size}")
        grid = config.size // decoder.upsample_factor
        self.models, self.config = models, config
        self.generators = [torch.Generator(device=device).manual_seed(config.seed + i) for i in range(config.batch)]
        self.text_embeds = clip.encode_text([p.text for p in prompts])            # once per run
        self.weights = torch.tensor([p.weight for p in prompts], device=device)
        self.logits = torch.cat([torch.randn(1, decoder.vocab_size, grid, grid, generator=g, device=device)
                                 for g in self.generators]).mul_(config.init_std)
        if init_logits is not None:
            shape = (decoder.vocab_size, grid, grid)
            if tuple(init_logits.shape[-3:]) != shape or init_logits.dim() not in (3, 4) or \
                    (init_logits.dim() == 4 and init_logits.shape[0] not in (1, config.batch)):
                raise ClipdrawError(f"initial logits must be shaped (vocab, grid, grid) = {shape} or have one row "
                                    f"per image, got {tuple(init_logits.shape)}")
            self.logits = init_logits.to(device, torch.float32).expand_as(self.logits).clone()
        # Channels-last, the decoder's layout: the relaxed tokens come out in it and need no copy.
        self.logits = self.logits.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        # Fused: one pass over the logits instead of several with full-size temporaries (at 512 px
        # each is 134 MB; on this CPU the update took 20 ms instead of 136).
        self.optimizer = torch.optim.Adam([self.logits], lr=config.lr, fused=True)
        self.schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, config.iters)
                         if config.lr_schedule == "cosine" else None)
        self.cutouts = Cutouts(clip.input_resolution, config.cutn, config.cut_min_scale,
                               config.augmentations).to(device)
        dtype = clip_autocast_dtype(device)
        self.clip_precision: Callable[[], ContextManager] = (
            (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext)
        self.decode: Callable[..., torch.Tensor] = decoder
        self.encode: Callable[..., torch.Tensor] = clip.encode_image
        if config.compile:
            self.decode = torch.compile(decoder, backend=COMPILE_BACKEND)
            self.encode = torch.compile(clip.encode_image, backend=COMPILE_BACKEND)

    def step(self, step: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """One iteration (1-based); returns (loss, similarity), one per image, as device tensors:
        nothing here waits for the device."""
        if self.config.low_memory and self.config.relaxation != "straight-through":
            # latents -> token scores -> images, the token probabilities never made whole (and the
            # scores, with gumbel a tensor of their own, left to the decoder's backward to free)
            image = self.models.decoder.decode_softmax(
                *tempered_scores(self.logits, self.config, step - 1, self.generators), low_memory=True)
        else:
            tokens = relax(self.logits, self.config, step - 1, self.generators)  # latents -> tokens
            image = self.decode(tokens, low_memory=self.config.low_memory)       # tokens -> images
        with self.clip_precision():
            embeds = self.encode(self.cutouts(image), low_memory=self.config.low_memory)  # views -> CLIP
        views = embeds.view(self.config.batch, self.config.cutn, -1)             # image i: rows i*cutn...
        loss, similarity = prompt_loss(views, self.text_embeds, self.weights, self.config.loss)
        loss.sum().backward()   # images share no weights: each row gets the gradient of its own loss
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)   # now, not before backward: the forward runs without it
        if self.schedule is not None:
            self.schedule.step()
        return loss.detach(), similarity.detach()

    @torch.no_grad()
    def snapshot(self, step: int) -> List[Frame]:
        """Each image without sampling noise, and CLIP's similarity of the whole of it."""
        images = self.models.decoder(relax(self.logits, self.config, step, self.generators, noisy=False))
        cos = self.models.clip.encode_image(images) @ self.text_embeds.T          # (batch, P)
        positive = self.weights.clamp(min=0)
        similarities = ((cos * positive).sum(-1) / positive.sum()).tolist()
        return [Frame(step, to_pil(image), similarity) for image, similarity in zip(images, similarities)]


def generate(models: Models, prompt: str, config: Optional[GenerationConfig] = None,
             on_frame: Optional[Callable[[Frame], None]] = None, progress: bool = True,
             init_logits: Optional[torch.Tensor] = None) -> GenerationResult:
    """Optimize one image for ``prompt``; call ``on_frame`` every ``save_every`` iterations.

    Ctrl-C ends the loop early: the result (``interrupted=True``) holds what was done.
    Same seed, same device, same settings -> the same image (bit-identical on CPU).
    ``init_logits`` starts from given latents instead of random ones (see ``Optimization``).
    """
    config = config or GenerationConfig()
    if config.batch != 1:
        raise ClipdrawError(f"generate() makes one image; for batch {config.batch} use generate_batch()")
    hook = None if on_frame is None else (lambda _index, frame: on_frame(frame))
    return generate_batch(models, prompt, config, on_frame=hook, progress=progress, init_logits=init_logits)[0]


def generate_batch(models: Models, prompt: str, config: Optional[GenerationConfig] = None,
                   on_frame: Optional[Callable[[int, Frame], None]] = None,
                   progress: bool = True, init_logits: Optional[torch.Tensor] = None) -> List[GenerationResult]:
    """Optimize ``config.batch`` images for ``prompt`` at once, seeds seed, seed + 1, ...;
    ``on_frame(i, frame)`` receives image i's frames.

    Image i starts from the latents a run of seed + i alone starts from, and gets its own
    cutouts, noise and Adam state; only the random crops differ from that run's, so it is
    as good an image, not the same one. Results come in seed order, each with its own seed
    in ``config``; they share the wall-clock time. Ctrl-C ends all of them, as in ``generate``.
    """
    config = config or GenerationConfig()
    prompts = parse_prompts(prompt)
    device = models.device
    cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):   # leave the caller's RNG state untouched
        torch.manual_seed(config.seed)
        run = Optimization(models, prompts, config, init_logits)
        frames: List[List[Frame]] = [[] for _ in range(config.batch)]
        losses, similarities = [], []

        def keep(step: int) -> None:
            for index, frame in enumerate(run.snapshot(step)):
                if frames[index] and frames[index][-1].iteration == step:
                    continue   # already kept (an interruption inside on_frame)
                frames[index].append(frame)
                if on_frame:
                    on_frame(index, frame)

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
                    bar.set_postfix(similarity=f"{similarity.mean().item():.4f}")
                if step % config.save_every == 0 or step == config.iters:
                    keep(step)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        done = len(losses)
        if any(not kept or kept[-1].iteration != done for kept in frames):   # what an interruption left unsaved
            keep(done)

    loss_rows = torch.stack(losses).T.tolist() if losses else [[] for _ in frames]
    similarity_rows = torch.stack(similarities).T.tolist() if similarities else [[] for _ in frames]
    return [GenerationResult(
        prompt=prompt, prompts=prompts, config=replace(config, seed=config.seed + i), image=frames[i][-1].image,
        frames=frames[i], losses=loss_rows[i], similarities=similarity_rows[i], iterations_done=done,
        seconds=seconds, interrupted=interrupted, latents=run.logits[i:i + 1].detach(),
        batch_index=i if config.batch > 1 else None) for i in range(config.batch)]
