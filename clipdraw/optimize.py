"""The pseudo-DALL-E: optimize dVAE latent logits so the decoded image matches a prompt in CLIP.

    prompt -> text embeddings -> latents -> relaxation -> decoder -> image
           -> cutouts + augmentations -> CLIP -> loss -> Adam step

Everything here is one loop over those stages; models are loaded elsewhere (models.py) and
outputs written elsewhere (outputs.py). The loop runs ``config.batch`` images at once, each
as ``config.candidates`` rows of latents, so that one decoder pass and one CLIP pass serve them
all; the judge keeps each image's best candidate.
"""

from __future__ import annotations

import bisect
import contextlib
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable, ContextManager, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .augment import Cutouts
from .config import GenerationConfig
from .device import total_memory
from .errors import ClipdrawError
from .dvae import gumbel_noise, relaxed_tokens
from .images import read_image
from .models import Models
from .progress import progress_bar
from .results import Frame, Result, best_frame, to_pil
from .picking import frame_pickers
from .prompts import require_something_to_draw
from .regions import region_targets
from .shapes import shape_targets
from .targets import Segment, parse_schedule, schedule_targets


@dataclass
class GenerationResult(Result):
    """The optimizer's result: the shared ``Result`` plus the per-step curves and the latents."""

    losses: List[float] = field(default_factory=list)
    similarities: List[float] = field(default_factory=list)     # per iteration, mean over cutouts
    latents: Optional[torch.Tensor] = field(default=None, repr=False)
    batch_index: Optional[int] = None   # place in a batched run (config.batch > 1), whose seconds it shares
    stopped_early: bool = False         # the judge's best frame grew older than config.patience frames
    candidate: Optional[int] = None     # config.candidates > 1: which candidate the judge kept
    candidate_scores: List[Optional[float]] = field(default_factory=list)   # each candidate's, as ranked

    @property
    def first_pick(self) -> int:
        return self.config.first_pick

    def summary(self) -> dict:
        chosen, last = self.chosen_frame, self.frames[-1] if self.frames else None
        return {**super().summary(),
                **({"judge": {"best_iteration": chosen.iteration, "best_score": chosen.judge_score,
                              "last_iteration": last.iteration, "last_score": last.judge_score,
                              "stopped_early": self.stopped_early}}
                   if last is not None and last.judge_score is not None else {}),
                **({"batch_index": self.batch_index} if self.batch_index is not None else {}),
                **({"candidates": {"chosen": self.candidate, "scores": self.candidate_scores}}
                   if self.candidate is not None else {}),
                "losses": self.losses, "similarities": self.similarities}


# --------------------------------------------------------------------------- the stages


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


def decoder_relaxation(config: GenerationConfig) -> str:
    """What the decoder does with ``tempered_scores``: gumbel is a softmax of noisy scores."""
    return "straight-through" if config.relaxation == "straight-through" else "softmax"


def relax(logits: torch.Tensor, config: GenerationConfig, step: int, generators: Generators,
          noisy: bool = True) -> torch.Tensor:
    """Logits (B, vocab, g, g) -> token probabilities, normalised over the vocabulary axis (dim 1):
    what ``DVAEDecoder.decode`` makes of ``tempered_scores`` before decoding them."""
    return relaxed_tokens(*tempered_scores(logits, config, step, generators, noisy), decoder_relaxation(config))


def clip_autocast_dtype(device: torch.device, precision: Optional[torch.dtype] = None) -> Optional[torch.dtype]:
    """The dtype CLIP runs in under autocast, None for none (float32). ``precision`` None: float16
    on CUDA, where CLIP was trained in half precision and tensor cores run it several times
    faster, float32 elsewhere; a dtype given is used on any device (CPU autocast runs both
    float16 and bfloat16)."""
    if precision is None:
        return torch.float16 if device.type == "cuda" else None
    return None if precision == torch.float32 else precision


COMPILE_BACKEND = "inductor"   # the tests swap in "aot_eager": the same tracing without a C++ build


# --------------------------------------------------------------------------- the loop


class Optimization:
    """``config.batch`` images being optimized together: their latent logits, ``config.candidates``
    rows each (image i's are rows i * candidates ...), the Adam state, and the frozen models that
    score them. Build it after seeding: it draws the initial latents, image i's first candidate
    from seed + i exactly as a run of that seed alone would (``candidate_seed``).

    ``schedule``: the prompt's segments (``clipdraw.targets.parse_schedule``); each becomes
    targets for the guide and the judge, with the image prompts and the edit of ``config``.

    ``config.init_image`` starts from that image's dVAE tokens, one-hot times
    ``config.init_scale``, added to the noise; ``init_logits`` (vocab, g, g), or (batch, vocab, g, g), replaces the
    start with given latents (for example a scene's tokens, to see whether CLIP keeps a correct
    image or pulls it elsewhere).

    ``config.compile`` compiles what can be compiled: CLIP's image encoder always, the decoder
    unless ``config.low_memory``, whose hand-written backward torch.compile cannot trace
    (``DVAEDecoder.decode``)."""

    def __init__(self, models: Models, schedule: List[Segment], config: GenerationConfig,
                 init_logits: Optional[torch.Tensor] = None):
        decoder, clip, device = models.decoder, models.clip, models.device
        if config.size % decoder.upsample_factor:
            raise ClipdrawError(f"size must be a multiple of {decoder.upsample_factor} for this decoder, "
                                f"got {config.size}")
        grid = config.size // decoder.upsample_factor
        self.models, self.config = models, config
        self.rows = config.batch * config.candidates
        require_memory_for_latents(self.rows, decoder.vocab_size, grid, device)
        self.generators = [torch.Generator(device=device).manual_seed(candidate_seed(config, row))
                           for row in range(self.rows)]
        self.init_pixels = (read_image(config.init_image, config.size, "init image").to(device)
                            if config.init_image else None)
        self.starts = [segment.start for segment in schedule]
        self.texts = [segment.text for segment in schedule] if len(schedule) > 1 else [None]
        self.targets, self.judge_targets = schedule_targets(models, schedule, config, self.init_pixels)  # once per run
        self.pickers = frame_pickers(models, schedule, config)
        self.regions = [[] if config.edit_from is not None else
                        region_targets(clip, segment.prompts, config.size, config.region_weight, self.init_pixels,
                                       device)
                        for segment in schedule]
        self.shapes = [[] if config.edit_from is not None else
                       shape_targets(clip, segment.prompts, config.shape_weight, self.init_pixels)
                       for segment in schedule]
        self.logits = torch.cat([torch.randn(1, decoder.vocab_size, grid, grid, generator=g, device=device)
                                 for g in self.generators]).mul_(config.init_std)
        if init_logits is None and self.init_pixels is not None:   # the image's tokens, over the noise
            self.logits += image_logits(models, self.init_pixels, config.init_scale)
        if init_logits is not None:
            shape = (decoder.vocab_size, grid, grid)
            if tuple(init_logits.shape[-3:]) != shape or init_logits.dim() not in (3, 4) or \
                    (init_logits.dim() == 4 and init_logits.shape[0] not in (1, config.batch)):
                raise ClipdrawError(f"initial logits must be shaped (vocab, grid, grid) = {shape} or have one row "
                                    f"per image, got {tuple(init_logits.shape)}")
            init_logits = init_logits.to(device, torch.float32).reshape(-1, *shape)
            self.logits = init_logits.repeat_interleave(config.candidates, 0).expand_as(self.logits).clone()
        # Channels-last, the decoder's layout: the relaxed tokens come out in it and need no copy.
        self.logits = self.logits.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        # Fused: one pass over the logits instead of several with full-size temporaries (at 512 px
        # each is 134 MB; on this CPU the update took 20 ms instead of 136).
        self.optimizer = torch.optim.Adam([self.logits], lr=config.lr, fused=True)
        self.schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, config.iters)
                         if config.lr_schedule == "cosine" else None)
        self.updates = 0   # Adam steps taken: the iteration a frame of the current latents shows
        self.ema_logits = self.logits.detach().clone() if config.ema else None
        self.cutouts = Cutouts(clip.input_resolution, config.cutn, config.cut_min_scale, config.augmentations,
                               config.cut_pow, config.overview).to(device)
        self.region_cutouts = Cutouts(clip.input_resolution, config.region_cuts, config.cut_min_scale,
                                      config.augmentations, config.cut_pow, config.overview).to(device)
        self.shape_cutouts = Cutouts(clip.input_resolution, config.shape_cuts, config.cut_min_scale,
                                     config.augmentations, config.cut_pow, config.overview).to(device)
        dtype = clip_autocast_dtype(device, models.precision)
        self.clip_precision: Callable[[], ContextManager] = (
            (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext)
        self.relaxation = decoder_relaxation(config)
        self.compiler = COMPILE_BACKEND if config.compile else None
        self.encode: Callable[..., torch.Tensor] = clip.encode_image
        if config.compile:
            self.encode = torch.compile(clip.encode_image, backend=COMPILE_BACKEND)

    def step(self, step: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """One iteration (1-based); returns (loss, similarity), one per image, as device tensors:
        nothing here waits for the device."""
        # latents -> token scores -> images (the scores, with gumbel a tensor of their own, held
        # by no name here: with --low-memory the decoder's backward frees them)
        image = self.models.decoder.decode(*tempered_scores(self.logits, self.config, step - 1, self.generators),
                                           relaxation=self.relaxation, low_memory=self.config.low_memory,
                                           compiler=self.compiler)
        segment = self.segment_at(step - 1)
        regions = self.regions[segment]   # "A above B": the half-pictures "A on the top", ... (regions.py)
        shapes = self.shapes[segment]     # the silhouette, read against the prompt without colours (shapes.py)
        cutouts = ([self.cutouts(image)] + [self.region_cutouts(r.shown(image)) for r in regions] +
                   [self.shape_cutouts(s.shown(image)) for s in shapes])
        with self.clip_precision():
            views_in = torch.cat(cutouts) if len(cutouts) > 1 else cutouts[0]   # no copy of the whole picture's views
            embeds = self.encode(views_in, low_memory=self.config.low_memory)  # views -> CLIP
        views, *extra_views = embeds.split([len(c) for c in cutouts])
        views = views.view(self.rows, self.config.cutn, -1)             # row i: views i*cutn...
        targets = self.targets[segment]
        loss, similarity = targets.loss(views, self.config.loss), targets.similarity(views).mean(-1)
        extra = [(r, self.config.region_cuts) for r in regions] + [(s, self.config.shape_cuts) for s in shapes]
        for (part, cuts), seen in zip(extra, extra_views):
            loss = loss + part.weight * part.targets.loss(seen.view(self.rows, cuts, -1), self.config.loss)
        if self.config.tv_weight:
            loss = loss + self.config.tv_weight * total_variation(image)
        if self.config.init_weight:
            loss = loss + self.config.init_weight * (image - self.init_pixels).pow(2).mean((1, 2, 3))
        loss.sum().backward()   # images share no weights: each row gets the gradient of its own loss
        self.optimizer.step()
        self.updates += 1
        self.optimizer.zero_grad(set_to_none=True)   # now, not before backward: the forward runs without it
        if self.schedule is not None:
            self.schedule.step()
        if self.ema_logits is not None:
            self.ema_logits.lerp_(self.logits.detach(), 1 - self.config.ema)
        return loss.detach(), similarity.detach()

    def segment_at(self, updates: int) -> int:
        """The schedule's segment in force once ``updates`` steps have been taken."""
        return bisect.bisect_right(self.starts, updates) - 1

    @torch.no_grad()
    def snapshot(self, step: int) -> List[Frame]:
        """Each image after ``step`` updates, without sampling noise (at the temperature of the
        last step taken), with the guide's similarity of the whole of it, and the judge's, for
        the prompt the step that made it aimed at."""
        latents = self.ema_logits if self.ema_logits is not None else self.logits
        images = self.models.decoder.decode(
            *tempered_scores(latents, self.config, max(step - 1, 0), self.generators, noisy=False),
            relaxation=self.relaxation)
        segment = self.segment_at(max(step - 1, 0))
        targets, embeds = self.targets[segment], self.models.clip.encode_image(images)
        similarities = targets.similarity(embeds).tolist()
        if self.pickers is not None and self.pickers[segment] is not None:
            judged = self.pickers[segment].scores(images)
        elif self.judge_targets is not None:
            judged = self.judge_targets[segment].similarity(self.models.judge.encode_image(images)).tolist()
        else:
            judged = [None] * len(similarities)
        return [Frame(step, to_pil(image), similarity, score, scores, self.texts[segment])
                for image, similarity, score, scores in zip(images, similarities, judged, targets.report(embeds))]


LATENT_COPIES = 5   # the logits, their gradient, Adam's two moments, the relaxed tokens: a floor, not an estimate


def require_memory_for_latents(rows: int, vocab: int, grid: int, device: torch.device) -> None:
    """A MemoryError (one line from the CLI, exit 1) before anything is allocated when the latents
    alone would not fit in ``device``'s memory: the kernel would otherwise kill the process
    without a word, at a size or candidate count typed by mistake."""
    needed, total = LATENT_COPIES * 4 * rows * vocab * grid * grid, total_memory(device)
    if total is not None and needed > total:
        raise MemoryError(f"{rows} row(s) of latents (images x candidates) of {vocab} tokens on a {grid}x{grid} "
                          f"grid need at least {needed / 2 ** 30:.1f} GiB; the {device.type} has {total / 2 ** 30:.1f} GiB")


def candidate_seed(config: GenerationConfig, row: int) -> int:
    """The seed of a row of latents: image i's first candidate has seed + i, as a run of that
    seed alone; candidate j > 0 a 32-bit hash of (seed + i, j), unlikely to be another run's
    seed (the CPU generator keeps 32 bits of a seed: an offset of 2**32 would repeat the first)."""
    image, candidate = divmod(row, config.candidates)
    if candidate == 0:
        return config.seed + image
    return int(np.random.SeedSequence([(config.seed + image) % 2 ** 64, candidate]).generate_state(1)[0])


def image_logits(models: Models, image: torch.Tensor, scale: float) -> torch.Tensor:
    """Latents (vocab, g, g) that decode to ``image``'s dVAE redraw: its tokens one-hot, times
    ``scale``, the gap that the optimizer's steps must close to change a token."""
    if models.encoder is None:
        raise ClipdrawError("an init image needs the dVAE encoder: load_models(..., encoder='openai'), "
                            "or the toy world's load_toy_models()")
    if models.encoder.vocab_size != models.decoder.vocab_size:
        raise ClipdrawError(f"the dVAE encoder has {models.encoder.vocab_size} tokens and the decoder "
                            f"{models.decoder.vocab_size}: they are not one dVAE")
    tokens = models.encoder.tokens(image.unsqueeze(0))[0]                     # (g, g)
    return one_hot_logits(tokens, models.decoder.vocab_size, scale)


def one_hot_logits(tokens: torch.Tensor, vocab_size: int, scale: float) -> torch.Tensor:
    """Latents (vocab, g, g) whose argmax is ``tokens`` (g, g), each ``scale`` above the rest."""
    return F.one_hot(tokens, vocab_size).permute(2, 0, 1).float().mul_(scale)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, one value per image (B, 3, H, W)."""
    return ((images[..., 1:, :] - images[..., :-1, :]).abs().mean((1, 2, 3)) +
            (images[..., :, 1:] - images[..., :, :-1]).abs().mean((1, 2, 3)))


@contextlib.contextmanager
def seeded_rng(device: torch.device, seed: int):
    """The CPU RNG, and on CUDA the RNG of ``device`` alone, seeded with ``seed`` inside; both
    restored on the way out. Only what is restored is seeded: ``torch.manual_seed`` would
    reseed every CUDA device (and MPS, XPU) for good. On CPU the same stream as
    ``torch.manual_seed(seed)``."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)   # the current device's generator only
        yield


def generate(models: Models, prompt: str, config: Optional[GenerationConfig] = None,
             on_frame: Optional[Callable[[Frame], None]] = None, progress: bool = True,
             init_logits: Optional[torch.Tensor] = None, keep_images: bool = False) -> GenerationResult:
    """Optimize one image for ``prompt``; call ``on_frame`` every ``save_every`` iterations.

    ``on_frame`` gets each frame with its image; the result's frames keep theirs only for the
    chosen frame (``result.image``) and the last one, so that memory does not grow with the
    number of frames, unless ``keep_images`` (every frame's image, for callers that look at each).

    Ctrl-C ends the loop early: the result (``interrupted=True``) holds what was done.
    Same seed, same device, same settings -> the same image (bit-identical on CPU).
    ``init_logits`` starts from given latents instead of random ones (see ``Optimization``).
    """
    config = config or GenerationConfig()
    if config.batch != 1:
        raise ClipdrawError(f"generate() makes one image; for batch {config.batch} use generate_batch()")
    hook = None if on_frame is None else (lambda _index, frame: on_frame(frame))
    return generate_batch(models, prompt, config, on_frame=hook, progress=progress, init_logits=init_logits,
                          keep_images=keep_images)[0]


def prompt_schedule(prompt: str, config: Optional[GenerationConfig] = None) -> List[Segment]:
    """``prompt``'s schedule for a run with ``config`` (None: its form only), or one ClipdrawError
    line: nothing to draw, a bad schedule, an edit whose prompt is not one plain caption."""
    require_something_to_draw(prompt, config.image_prompts if config else ())
    schedule = parse_schedule(prompt, config.iters if config else None)
    if config is not None and config.edit_from is not None and (
            len(schedule) > 1 or len(schedule[0].prompts) != 1 or schedule[0].prompts[0].weight != 1):
        raise ClipdrawError("an edit goes from one caption to one other: give --to one plain caption")
    return schedule


def generate_batch(models: Models, prompt: str, config: Optional[GenerationConfig] = None,
                   on_frame: Optional[Callable[[int, Frame], None]] = None,
                   progress: bool = True, init_logits: Optional[torch.Tensor] = None,
                   keep_images: bool = False) -> List[GenerationResult]:
    """Optimize ``config.batch`` images for ``prompt`` at once, seeds seed, seed + 1, ...;
    ``on_frame(i, frame)`` receives image i's frames. Images kept in the results: as in ``generate``.

    Image i starts from the latents a run of seed + i alone starts from, and gets its own
    cutouts, noise and Adam state; only the random crops differ from that run's, so it is
    as good an image, not the same one. Results come in seed order, each with its own seed
    in ``config``; they share the wall-clock time. Ctrl-C ends all of them, as in ``generate``.

    With ``config.candidates`` K > 1 each image is K latents optimized side by side, and the
    result is the candidate whose best frame the judge ranks highest (the guide's similarity of
    the last frame when there is no judge): the reranking DALL-E and dalle-mini do, on the
    optimizer's runs. ``on_frame`` then receives the kept candidate's frames when the run ends.
    """
    config = config or GenerationConfig()
    schedule = prompt_schedule(prompt, config)
    prompts = [p for segment in schedule for p in segment.prompts]
    live = config.candidates == 1   # else frames reach on_frame once the judge has chosen
    with seeded_rng(models.device, config.seed):   # leave the caller's RNG state untouched
        run = Optimization(models, schedule, config, init_logits)
        frames: List[List[Frame]] = [[] for _ in range(run.rows)]
        holding: List[List[int]] = [[] for _ in range(run.rows)]   # where frames[row] still has its image
        losses, similarities = [], []

        def keep(step: int) -> None:
            for row, frame in enumerate(run.snapshot(step)):
                kept = frames[row]
                if kept and kept[-1].iteration == step:
                    continue   # already kept (an interruption inside on_frame)
                kept.append(frame)
                holding[row].append(len(kept) - 1)
                if on_frame and live:
                    on_frame(row, frame)
                if not keep_images and live:
                    holding[row] = drop_images(kept, holding[row], config.first_pick)

        interrupted = stopped_early = False
        if run.init_pixels is not None:
            keep(0)   # the dVAE's redraw of the init image: where the GIF starts
        start = time.perf_counter()
        bar = progress_bar(range(1, config.iters + 1), desc="optimizing", unit="it", disable=not progress,
                   dynamic_ncols=True, leave=True)
        try:
            for step in bar:
                loss, similarity = run.step(step)
                losses.append(loss)
                similarities.append(similarity)
                if step % 10 == 0 or step == 1:   # reading the value syncs the device: not every step
                    bar.set_postfix_str(f"cutout similarity {similarity.mean().item():.4f}")
                if step == ESTIMATE_AFTER and progress:
                    warn_if_long(bar, step, time.perf_counter() - start, config.iters, models.device)
                if step % config.save_every == 0 or step == config.iters:
                    keep(step)
                    if config.patience and step < config.iters and \
                            all(judged_stale(kept, config.patience, config.first_pick) for kept in frames):
                        stopped_early = True
                        break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        done = run.updates   # not len(losses): an interruption may fall between the update and its record
        if any(not kept or kept[-1].iteration != done for kept in frames):   # what an interruption left unsaved
            keep(done)
        scores = [[candidate_score(kept, config.first_pick) for kept in frames[i * config.candidates:(i + 1) * config.candidates]]
                  for i in range(config.batch)]
        chosen = [i * config.candidates + best_candidate(row_scores) for i, row_scores in enumerate(scores)]
        if on_frame and not live:
            for image, row in enumerate(chosen):
                for frame in frames[row]:
                    on_frame(image, frame)
        if not keep_images:   # again: a Ctrl-C inside on_frame skips it there
            holding = [drop_images(kept, held, config.first_pick) for kept, held in zip(frames, holding)]

    loss_rows = torch.stack(losses).T.tolist() if losses else [[] for _ in frames]
    similarity_rows = torch.stack(similarities).T.tolist() if similarities else [[] for _ in frames]
    return [GenerationResult(
        prompt=prompt, prompts=prompts, config=replace(config, seed=config.seed + i),
        image=best_frame(frames[row], config.first_pick).image,
        frames=frames[row], losses=loss_rows[row], similarities=similarity_rows[row], iterations_done=done,
        seconds=seconds, interrupted=interrupted, latents=run.logits[row:row + 1].detach(),
        batch_index=i if config.batch > 1 else None, stopped_early=stopped_early,
        candidate=row % config.candidates if config.candidates > 1 else None,
        candidate_scores=scores[i] if config.candidates > 1 else [])
        for i, row in enumerate(chosen)]


def candidate_score(frames: Sequence[Frame], first_pick: int = 0) -> Optional[float]:
    """How a candidate ranks: its best frame's judge score, or without a judge its last frame's
    similarity to the guide (which flatters: a guide grading its own work)."""
    best = best_frame(frames, first_pick)
    if best is None:
        return None
    return best.judge_score if best.judge_score is not None else best.similarity


def best_candidate(scores: Sequence[Optional[float]]) -> int:
    """The first of the highest scores (None ranks last)."""
    return max(range(len(scores)), key=lambda j: (scores[j] is not None, scores[j] or 0.0, -j))


ESTIMATE_AFTER = 3          # steps timed before a run's length is estimated (the first one warms up)
LONG_RUN_SECONDS = 600.0    # a CPU run estimated longer than this gets one line saying so


def warn_if_long(bar, steps: int, seconds: float, iters: int, device: torch.device) -> None:
    """On a CPU, one line when the run will take long: the real models take seconds per step
    there, which a newcomer cannot guess from a bar that starts at 0%."""
    total = seconds / steps * iters
    if device.type != "cpu" or total < LONG_RUN_SECONDS:
        return
    hours, minutes = divmod(round(total / 60), 60)
    bar.write(f"clipdraw: about {seconds / steps:.1f} s per step on this CPU, so {iters} steps take about "
              f"{f'{hours} h {minutes} min' if hours else f'{minutes} min'}; a GPU is far faster, and "
              "--model toy shows the whole loop in seconds", file=sys.stderr)


def drop_images(frames: List[Frame], holding: Sequence[int], first_pick: int = 0) -> List[int]:
    """Replace, in ``frames``, the frames at ``holding`` that are neither the chosen one nor the
    last by copies without their image (whoever got a frame keeps it whole); return where
    images remain: at most two places, however many frames."""
    chosen, last, still = best_frame(frames, first_pick), len(frames) - 1, []
    for j in holding:
        if j == last or frames[j] is chosen:
            still.append(j)
        else:
            frames[j] = replace(frames[j], image=None)
    return still


def judged_stale(frames: Sequence[Frame], patience: int, first_pick: int = 0) -> bool:
    """True when the judge's best frame is ``patience`` or more saved frames behind the last;
    never before a frame from ``first_pick`` on was saved (the pick has not begun)."""
    best = best_frame(frames, first_pick)
    return best is not None and best.judge_score is not None and frames[-1].iteration >= first_pick and \
        len(frames) - 1 - frames.index(best) >= patience
