"""Train the toy world from scratch: dVAE, then CLIP, then the transformer over dVAE tokens.

Each stage is a short loop in the nanoGPT manner: data batch -> forward -> loss -> step,
with a tqdm bar and the loss logged. Everything is seeded: the same command gives the same
weights on the same machine.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import TOY_STAGES
from ..io import atomic_write_json
from ..dvae import LOGIT_LAPLACE_EPS, decoder_output_to_pixels, softmax_over_vocabulary, straight_through
from ..models import CLIP_MEAN, CLIP_STD
from ..optimize import gumbel_noise
from . import data
from .models import (GPT, GPT_CONFIG, WEIGHTS_DIR, WordTokenizer, build_clip, build_dvae, clip_state_for_saving,
                     cosine_lr, load_toy_dvae, save_weights)


@dataclass
class TrainConfig:
    seed: int = 0
    dvae_steps: int = 750
    dvae_batch: int = 64
    dvae_lr: float = 2e-3
    dvae_noise: float = 0.0     # gumbel noise scale; full-strength noise drowns tiny untrained logits
    dvae_usage: float = 0.05    # weight of the codebook-usage term
    dvae_hard_from: float = 0.66  # fraction of training after which tokens are straight-through one-hot
    clip_steps: int = 600
    clip_batch: int = 48               # scenes; with their twins, twice as many images
    clip_lr: float = 1e-3
    clip_hard_negatives: bool = True   # a near-miss caption per image (see data.hard_negative)
    clip_tower: str = "resnet"         # image tower: "resnet" (conv stem) or "vit" (8-pixel patches)
    clip_twins: bool = True            # each scene's twin (one word changed) in the same batch
    clip_redraw: float = 0.5           # share of images shown as the dVAE redraws them
    clip_negative_images: int = 16     # cluttered and faded scenes that no caption describes
    clip_robust_eps: float = 0.03      # L-inf radius of PGD perturbations in [0, 1] pixels; 0: off
    clip_robust_steps: int = 2
    clip_robust_from: float = 0.2      # share of the steps before PGD starts
    clip_rounds: int = 0               # optimizer-in-the-loop rounds after the first training (guide only; 2 measured worse)
    clip_round_prompts: int = 24       # captions the optimizer draws per round
    clip_round_steps: int = 150        # training steps per round, with the rejected images as negatives
    clip_round_iters: int = 120        # optimizer iterations per caption in a round
    clip_round_lr: float = 0.3         # peak learning rate of a round, as a share of clip_lr
    clip_bank_per_step: int = 16       # rejected images among each step's negatives
    judge_seed: int = 1                # the judge CLIP's seed offset: same recipe, never a guide, no rounds
    gpt_images: int = 24000
    gpt_steps: int = 2500
    gpt_batch: int = 64
    gpt_lr: float = 1e-3


def map_pixels(x: torch.Tensor) -> torch.Tensor:
    return (1 - 2 * LOGIT_LAPLACE_EPS) * x + LOGIT_LAPLACE_EPS


def _batch(step: int, size: int, seed: int) -> List[data.Scene]:
    return [data.scene_at(step * size + i, seed, "train") for i in range(size)]


def _loop(name: str, steps: int, body: Callable[[int], Dict[str, float]], log: list, progress: bool) -> None:
    bar = tqdm(range(steps), desc=f"train {name}", unit="step", disable=not progress, dynamic_ncols=True)
    for step in bar:
        values = body(step)
        if step % 25 == 0 or step == steps - 1:
            bar.set_postfix({k: f"{v:.4f}" for k, v in values.items()})
            log.append({"stage": name, "step": step, **values})


def train_dvae(config: TrainConfig, log: list, progress: bool = True):
    """Gumbel-softmax dVAE: soft relaxation with an annealed temperature, then straight-through
    one-hot for the last third so the decoder learns to read hard tokens (what the transformer emits)."""
    encoder, decoder = build_dvae(config.seed)
    params = [*encoder.parameters(), *decoder.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=config.dvae_lr)
    generator = torch.Generator().manual_seed(config.seed)
    vocab = decoder.vocab_size

    def step(i: int) -> Dict[str, float]:
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(i, config.dvae_steps, config.dvae_lr)
        x = map_pixels(data.image_batch(_batch(i, config.dvae_batch, config.seed)))
        logits = encoder(x)
        tau = 1.0 * (1 / 16) ** min(i / (0.66 * config.dvae_steps), 1.0)
        noisy = logits + config.dvae_noise * gumbel_noise(logits, generator)
        soft = softmax_over_vocabulary(noisy, tau, vocabulary_last=False)
        if i >= config.dvae_hard_from * config.dvae_steps:
            soft = straight_through(soft)
        pixels = torch.sigmoid(decoder(soft)[:, :3])
        reconstruction = F.mse_loss(pixels, x)
        # Codebook usage: keep the batch's average code distribution spread (else a tiny dVAE
        # collapses onto a couple of codes and the decoder learns the mean image).
        usage = softmax_over_vocabulary(logits, vocabulary_last=False).mean(dim=(0, 2, 3))
        spread = math.log(vocab) + (usage * usage.clamp_min(1e-10).log()).sum()   # log V - entropy
        loss = reconstruction + config.dvae_usage * spread
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"mse": reconstruction.item(), "codes": float(logits.argmax(1).unique().numel()), "tau": tau}

    _loop("dvae", config.dvae_steps, step, log, progress)
    return encoder.eval().requires_grad_(False), decoder.eval().requires_grad_(False)


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Light shifts and noise: CLIP should judge content, not exact pixels."""
    n = images.shape[0]
    theta = torch.zeros(n, 2, 3)
    scale = 1 + (torch.rand(n, generator=generator) - 0.5) * 0.2
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = (torch.rand(n, 2, generator=generator) - 0.5) * 0.1
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    return (images + torch.randn(images.shape, generator=generator) * 0.03).clamp(0, 1)


def caption_token_rows(captions: List[str]) -> torch.Tensor:
    from ..weights import import_clip  # noqa: PLC0415

    tokens = import_clip().tokenize(captions, context_length=77, truncate=True)
    return torch.unique(tokens)


def negative_images(n: int, generator: torch.Generator, dvae=None, seed: int = 0, step: int = 0) -> torch.Tensor:
    """Images no caption describes, shown to CLIP as wrong answers for every caption: scenes
    whose dVAE tokens were partly replaced at random (stray patches of colour inside and around
    the objects: the optimizer's clutter) and scenes faded toward the background (too pale for
    any colour word: its washed-out fields). Without them the guide tolerates both
    (docs/toy-guidance.md)."""
    scenes = [data.scene_at(step * n + i, seed + 11, "train") for i in range(n)]
    pixels = data.image_batch(scenes)
    background = torch.tensor(data.BACKGROUND, dtype=torch.float).view(1, 3, 1, 1) / 255
    faded = torch.arange(n) % 2 == 1
    fade = 0.55 + 0.3 * torch.rand(n, 1, 1, 1, generator=generator)
    pixels = torch.where(faded.view(n, 1, 1, 1), pixels + (background - pixels) * fade, pixels)
    if dvae is not None and (~faded).any():
        pixels[~faded] = redraw(pixels[~faded], *dvae, corrupt=(0.15, 0.35), generator=generator)
    return pixels


def redraw(images: torch.Tensor, encoder, decoder, corrupt: Optional[Tuple[float, float]] = None,
           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Images through the dVAE and back (hard tokens): what the optimizer's images look like.
    ``corrupt`` (low, high): replace that share of each image's tokens (drawn uniformly in the
    range) with random ones."""
    with torch.no_grad():
        tokens = encoder(map_pixels(images)).argmax(1)
        if corrupt is not None:
            n = tokens.shape[0]
            share = corrupt[0] + (corrupt[1] - corrupt[0]) * torch.rand(n, 1, 1, generator=generator)
            replace = torch.rand(tokens.shape, generator=generator) < share
            tokens = torch.where(replace, torch.randint(decoder.vocab_size, tokens.shape, generator=generator), tokens)
        out = decoder(F.one_hot(tokens, decoder.vocab_size).permute(0, 3, 1, 2).float())
        return decoder_output_to_pixels(out)


def contrastive_loss(model, images: torch.Tensor, negatives: torch.Tensor, text_features: torch.Tensor,
                     targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """CLIP's symmetric loss. ``targets`` (n, n) weighs every image with the same caption as a
    positive; text features beyond the first n are wrong captions, ``negatives`` wrong images.
    Returns the loss and the logits."""
    n = images.shape[0]
    image_features = F.normalize(model.encode_image(torch.cat([images, negatives])), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * image_features @ text_features.T   # (n + neg, n + wrong)
    image_to_text = F.cross_entropy(logits[:n], F.pad(targets, (0, logits.shape[1] - n)))
    text_to_image = F.cross_entropy(logits[:, :n].T, F.pad(targets.T, (0, logits.shape[0] - n)))
    return (image_to_text + text_to_image) / 2, logits


def train_clip(config: TrainConfig, log: list, progress: bool = True, seed: Optional[int] = None,
               dvae=None, name: str = "clip", model=None, steps: Optional[int] = None, bank=None, step_offset: int = 0):
    """Contrastive CLIP on (render, caption) pairs, with clip's own tokenizer, trained to be a
    guide whose gradient draws: each scene meets its twin (one word changed, data.twin) and a
    near-miss caption, images no caption describes, the dVAE's redraws of the renders, and,
    after a warm-up, PGD perturbations that make its gradients follow shapes, not pixels
    (adversarial training; Santurkar et al. 2019)."""
    from ..weights import import_clip  # noqa: PLC0415

    clip = import_clip()
    seed = config.seed if seed is None else seed
    model = build_clip(seed, config.clip_tower) if model is None else model
    steps = config.clip_steps if steps is None else steps
    model.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.clip_lr, weight_decay=0.05)
    generator = torch.Generator().manual_seed(seed + 1 + step_offset)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    context = model.context_length
    eps = config.clip_robust_eps
    robust_from = int(config.clip_robust_from * steps) if step_offset == 0 else 0
    peak = config.clip_lr if step_offset == 0 else config.clip_lr * config.clip_round_lr

    def step(i: int) -> Dict[str, float]:
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(i, steps, peak)
        i += step_offset
        rng = np.random.default_rng([seed, i])
        scenes = _batch(i, config.clip_batch, seed + 7)
        if config.clip_twins:
            scenes = scenes + [data.twin(s, rng) for s in scenes]
        pixels = data.image_batch(scenes)
        if dvae is not None and config.clip_redraw > 0:
            chosen = torch.rand(len(scenes), generator=generator) < config.clip_redraw
            if chosen.any():
                pixels[chosen] = redraw(pixels[chosen], *dvae)
        pixels = _augment(pixels, generator)
        negatives = negative_images(config.clip_negative_images, generator, dvae, seed, i)
        if bank is not None and len(bank):   # the optimizer's own images that the analytic judge rejected
            chosen = torch.randint(len(bank), (min(config.clip_bank_per_step, len(bank)),), generator=generator)
            negatives = torch.cat([negatives, bank[chosen]])
        negatives = _augment(negatives, generator)
        # Each image also meets a near-miss caption (one attribute changed) among its candidates.
        wrong = [data.hard_negative(s, rng) for s in scenes] if config.clip_hard_negatives else []
        texts = clip.tokenize([s.caption for s in scenes] + wrong, context_length=context, truncate=True)
        same = torch.tensor([[a.caption == b.caption for b in scenes] for a in scenes], dtype=torch.float)
        targets = same / same.sum(1, keepdim=True)
        text_features = F.normalize(model.encode_text(texts), dim=-1)
        if eps > 0 and i >= robust_from:
            pixels = perturb(model, pixels, (negatives - mean) / std, text_features.detach(), targets, eps,
                             config.clip_robust_steps, generator, mean, std)
        loss, logits = contrastive_loss(model, (pixels - mean) / std, (negatives - mean) / std, text_features,
                                        targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = len(scenes)
        accuracy = (F.pad(targets, (0, logits.shape[1] - n))[torch.arange(n), logits[:n].argmax(1)] > 0).float().mean().item()
        return {"loss": loss.item(), "acc": accuracy}

    _loop(name, steps, step, log, progress)
    return model.eval().requires_grad_(False)


def perturb(model, pixels: torch.Tensor, negatives: torch.Tensor, text_features: torch.Tensor, targets: torch.Tensor,
            eps: float, steps: int, generator: torch.Generator, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """PGD within an L-inf ball of radius ``eps`` (pixels in [0, 1]) that raises the loss:
    the worst nearby image, which the model then learns to read correctly."""
    delta = (torch.rand(pixels.shape, generator=generator) * 2 - 1) * eps
    for _ in range(steps):
        delta.requires_grad_(True)
        loss, _ = contrastive_loss(model, ((pixels + delta).clamp(0, 1) - mean) / std, negatives, text_features,
                                   targets)
        grad, = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + 2.5 * eps / steps * grad.sign()).clamp(-eps, eps)
    return (pixels + delta).clamp(0, 1).detach()


def optimizer_rejects(model, decoder, config: TrainConfig, seed: int, round_index: int,
                      progress: bool = True) -> torch.Tensor:
    """Draw training captions with clipdraw's own optimizer guided by ``model``, and return the
    saved frames that the analytic judge rejects for their caption: the images this guide
    wrongly likes, to be shown to it as wrong answers in the next round."""
    from ..config import toy_config  # noqa: PLC0415
    from ..dvae import DVAEDecoder  # noqa: PLC0415
    from ..models import ClipModel, Models  # noqa: PLC0415
    from ..optimize import generate  # noqa: PLC0415
    from .judge import satisfies  # noqa: PLC0415

    guide = copy.deepcopy(model)
    models = Models(clip=ClipModel(guide), decoder=DVAEDecoder(copy.deepcopy(decoder)), device=torch.device("cpu"))
    kinds = ("single", "single", "relation")
    rejected = []
    bar = tqdm(range(config.clip_round_prompts), desc=f"optimizer round {round_index + 1}", unit="prompt",
               disable=not progress, dynamic_ncols=True)
    for k in bar:
        scene = data.scene_at(k, seed + 17 + round_index, "train", kinds[k % len(kinds)])
        settings = toy_config(seed=seed + k, iters=config.clip_round_iters, cutn=8, save_every=20)
        result = generate(models, scene.caption, settings, progress=False, keep_images=True)
        rejected += [np.asarray(f.image) for f in result.frames if not satisfies(scene.caption, np.asarray(f.image))]
        bar.set_postfix(rejected=len(rejected))
    if not rejected:
        return torch.zeros(0, 3, data.IMAGE_SIZE, data.IMAGE_SIZE)
    return torch.from_numpy(np.stack(rejected)).permute(0, 3, 1, 2).float() / 255


def train_guide(config: TrainConfig, log: list, dvae, progress: bool = True, model=None):
    """The guiding CLIP: train_clip (or start from ``model``), then rounds of optimizer-in-the-loop
    hard negatives. The rounds start from the weights in the precision they are saved in, so a
    first training saved and reloaded continues exactly as one run through."""
    if model is None:
        model = train_clip(config, log, progress, dvae=dvae)
        with torch.no_grad():
            for tensor in model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half().float())
    bank = torch.zeros(0, 3, data.IMAGE_SIZE, data.IMAGE_SIZE)
    for r in range(config.clip_rounds):
        bank = torch.cat([bank, optimizer_rejects(model, dvae[1], config, config.seed, r, progress)])
        log.append({"stage": "clip", "step": config.clip_steps + r * config.clip_round_steps, "round": r + 1,
                    "rejected_images": len(bank)})
        model = train_clip(config, log, progress, dvae=dvae, model=model, steps=config.clip_round_steps, bank=bank,
                           step_offset=config.clip_steps + r * config.clip_round_steps, name="clip")
    return model


def vocabulary(seed: int) -> List[str]:
    """Every word the captions use, in a fixed order."""
    words = set()
    for split in ("train", "heldout"):
        for kind in data.SCENE_KINDS:
            for scene in data.scenes(400, seed, split, kind):
                words.update(WordTokenizer.split(scene.caption))
    return sorted(words)


def train_transformer(config: TrainConfig, encoder, log: list, progress: bool = True):
    """The mini DALL-E: next-token prediction of dVAE codes after the caption's words."""
    tokenizer = WordTokenizer(vocabulary(config.seed), GPT_CONFIG["text_len"])
    scenes = [data.scene_at(i, config.seed + 13, "train") for i in range(config.gpt_images)]
    codes = []
    with torch.no_grad():   # tokenise every image once with the trained encoder
        for start in tqdm(range(0, len(scenes), 256), desc="tokenise images", disable=not progress):
            batch = scenes[start:start + 256]
            codes.append(encoder(map_pixels(data.image_batch(batch))).argmax(1).flatten(1))
    codes = torch.cat(codes)
    texts = tokenizer.encode([s.caption for s in scenes])
    model = fit_transformer(texts, codes, len(tokenizer), encoder.vocab_size, GPT_CONFIG, config, log, progress)
    return model, tokenizer


def fit_transformer(texts: torch.Tensor, codes: torch.Tensor, text_vocab: int, image_vocab: int, gpt_config: dict,
                    config: TrainConfig, log: list, progress: bool = True,
                    device: Optional[torch.device] = None) -> GPT:
    """The one training loop both the toy world and a real image-caption set go through:
    (texts (N, text_len) word ids, codes (N, image_tokens) dVAE tokens) -> a trained GPT.
    Batches are drawn on the CPU, so the same seed picks the same rows on any device."""
    torch.manual_seed(config.seed + 2)
    model = GPT(text_vocab, image_vocab, **gpt_config)
    if device is not None:
        model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.gpt_lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(config.seed + 3)

    def step(i: int) -> Dict[str, float]:
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(i, config.gpt_steps, config.gpt_lr)
        rows = torch.randint(len(codes), (config.gpt_batch,), generator=generator)
        text, image = texts[rows], codes[rows]
        if device is not None:
            text, image = text.to(device, non_blocking=True), image.to(device, non_blocking=True)
        logits = model(text, image)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), image.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return {"loss": loss.item()}

    _loop("transformer", config.gpt_steps, step, log, progress)
    return model.eval().requires_grad_(False)


# What ``clipdraw toy train --scale`` multiplies (0.01 for a smoke run).
SCALED_SETTINGS = ("dvae_steps", "clip_steps", "clip_round_steps", "clip_round_prompts", "clip_round_iters",
                   "gpt_steps", "gpt_images")


def train_all(config: Optional[TrainConfig] = None, out: Path = WEIGHTS_DIR, stages=TOY_STAGES,
              progress: bool = True) -> dict:
    """Train the requested stages and write their safetensors files into ``out``."""
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    flush = torch.set_flush_denormal(True)   # tiny gradients turn denormal on CPU: 2x slower without this
    try:
        return _train_stages(config, out, stages, progress)
    finally:
        if flush:
            torch.set_flush_denormal(False)


def _train_stages(config: TrainConfig, out: Path, stages, progress: bool) -> dict:
    log: list = []
    seconds = {}
    meta = {"train_config": asdict(config)}
    if "dvae" in stages:
        start = time.perf_counter()
        encoder, decoder = train_dvae(config, log, progress)
        state = {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()},
                 **{f"decoder.{k}": v for k, v in decoder.state_dict().items()}}
        save_weights(out / "dvae.safetensors", state, meta)
        seconds["dvae"] = time.perf_counter() - start
    rows = caption_token_rows([s.caption for split in ("train", "heldout") for kind in data.SCENE_KINDS
                               for s in data.scenes(400, config.seed, split, kind)])
    for stage, file in (("judge", "judge"), ("clip", "clip")):
        if stage in stages:
            start = time.perf_counter()
            dvae = load_toy_dvae(out)   # the saved one, as the optimizer will see it
            if stage == "clip":
                model = train_guide(config, log, dvae, progress)
            else:   # same recipe, another seed, no rounds: it never sees what the guide draws
                model = train_clip(config, log, progress, seed=config.seed + config.judge_seed, dvae=dvae,
                                   name="judge")
            save_weights(out / f"{file}.safetensors", clip_state_for_saving(model, rows), meta)
            seconds[stage] = time.perf_counter() - start
    if "transformer" in stages:
        start = time.perf_counter()
        # Always the saved (half-precision) encoder: training the stages together or one by one
        # then tokenises identically and gives the same transformer.
        encoder, _ = load_toy_dvae(out)
        model, tokenizer = train_transformer(config, encoder, log, progress)
        save_weights(out / "transformer.safetensors", model.state_dict(),
                     {**meta, "words": tokenizer.words, "image_vocab": encoder.vocab_size, "gpt_config": GPT_CONFIG})
        seconds["transformer"] = time.perf_counter() - start
    summary = {"seconds": seconds, "log": log, "config": asdict(config)}
    _merge_log(out / "train_log.json", summary)
    return summary


def _merge_log(path: Path, summary: dict) -> None:
    """Stages trained one at a time share one log: a stage's new entries replace its old ones."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    trained = set(summary["seconds"])
    merged = {"seconds": {**{k: v for k, v in old.get("seconds", {}).items() if k not in trained}, **summary["seconds"]},
              "log": [e for e in old.get("log", []) if e.get("stage") not in trained] + summary["log"],
              "config": summary["config"]}
    atomic_write_json(path, merged, indent=1)
