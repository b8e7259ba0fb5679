"""Train the toy world from scratch: dVAE, then the two CLIPs (``train_clip.py``), then the
transformer over dVAE tokens.

Each stage is a short loop in the nanoGPT manner: data batch -> forward -> loss -> step,
with a tqdm bar and the loss logged. Everything is seeded: the same command gives the same
weights on the same machine.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from ..config import TOY_STAGES
from ..io import atomic_write_json
from ..dvae import gumbel_noise, map_pixels, softmax_over_vocabulary, straight_through
from ..progress import progress_bar
from . import data
from .models import (GPT, GPT_CONFIG, WEIGHTS_DIR, WordTokenizer, build_dvae, clip_state_for_saving,
                     cosine_lr, load_toy_clip, load_toy_dvae, save_weights)


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
    clip_view_augmentations: bool = False   # images also get the optimizer's cutout augmentations (augment.py)
    clip_silhouettes: float = 0.3      # share of the guide's scenes shown as silhouettes, captions without colours
    clip_silhouette_frames: bool = True    # the rounds' named frames too, at that share (docs/toy-guidance.md)
    clip_rounds: int = 4               # rounds in which the guide trains on its own frames, named by the judge (docs/toy-guidance.md)
    clip_round_prompts: int = 40       # training captions the guide draws per round
    clip_round_iters: int = 300        # optimizer iterations per caption (the toy default)
    clip_round_steps: int = 200        # training steps per round on those frames
    clip_round_lr: float = 0.3         # peak learning rate of a round, as a share of clip_lr
    clip_round_regions: float = 0.0    # region_weight of the guide's drawings for training (rounds, judge frames); 0: as shipped
    clip_round_cutn: int = 16          # those drawings' views per iteration (one candidate), of them whole images:
    clip_round_overview: int = 4       # the toy defaults the shipped guide drew with
    drawing_workers: int = 0           # those drawings in N processes of one thread (same for any N); 0: here, as shipped
    clip_bank_per_step: int = 16       # drawn frames that show nothing, among each step's wrong images
    clip_asked_own_frame: bool = False  # a rejected frame's asked caption is wrong for that frame only, not its whole batch
    judge_seed: int = 1                # the judge CLIP's seed offset: same recipe, never a guide
    judge_robust: bool = True          # PGD in the judge's training as in the guide's; off trains faster (docs/toy-world.md)
    judge_silhouettes: float = 0.0     # share of the judge's scenes shown as silhouettes, captions without colours
    judge_frame_prompts: int = 0       # captions the guide draws for the judge (labelled_frames); 0: off (no better)
    judge_frame_iters: int = 300       # optimizer iterations per caption (the toy default)
    judge_frame_steps: int = 150       # judge training steps on those frames, after its first training
    judge_frames_per_step: int = 48    # drawn frames in each batch of those steps (and of the guide's rounds)
    gpt_images: int = 24000
    gpt_steps: int = 2500
    gpt_batch: int = 64
    gpt_lr: float = 1e-3


def scene_batch(step: int, size: int, seed: int) -> List[data.Scene]:
    return [data.scene_at(step * size + i, seed, "train") for i in range(size)]


def train_loop(name: str, steps: int, body: Callable[[int], Dict[str, float]], log: list, progress: bool) -> None:
    bar = progress_bar(range(steps), desc=f"train {name}", unit="step", disable=not progress, dynamic_ncols=True)
    for step in bar:
        values = body(step)
        if step % 25 == 0 or step == steps - 1:
            bar.set_postfix({k: f"{v:.4f}" for k, v in values.items()})
            log.append({"stage": name, "step": step, **values})


def train_dvae(config: TrainConfig, log: list, progress: bool = True):
    """Gumbel-softmax dVAE: soft relaxation with an annealed temperature, then straight-through
    one-hot for the last third so the decoder learns to read hard tokens (what the transformer emits)."""
    encoder, decoder = build_dvae(config.seed)
    for model in (encoder, decoder):
        model.to(memory_format=torch.channels_last)   # faster convolutions on CPU
    params = [*encoder.parameters(), *decoder.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=config.dvae_lr)
    generator = torch.Generator().manual_seed(config.seed)
    vocab = decoder.vocab_size

    def step(i: int) -> Dict[str, float]:
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(i, config.dvae_steps, config.dvae_lr)
        x = map_pixels(data.image_batch(scene_batch(i, config.dvae_batch, config.seed)))
        x = x.contiguous(memory_format=torch.channels_last)
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

    train_loop("dvae", config.dvae_steps, step, log, progress)
    return tuple(m.eval().requires_grad_(False).to(memory_format=torch.contiguous_format) for m in (encoder, decoder))


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
        for start in progress_bar(range(0, len(scenes), 256), desc="tokenise images", disable=not progress):
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

    train_loop("transformer", config.gpt_steps, step, log, progress)
    return model.eval().requires_grad_(False)


# What ``clipdraw toy train --scale`` multiplies (0.01 for a smoke run).
SCALED_SETTINGS = ("dvae_steps", "clip_steps", "clip_round_steps", "clip_round_prompts", "clip_round_iters",
                   "judge_frame_prompts", "judge_frame_iters", "judge_frame_steps", "gpt_steps", "gpt_images")


def scaled_config(scale: float = 1.0, seed: int = 0, guide_rounds: Optional[int] = None) -> TrainConfig:
    """The default recipe with its step and image counts times ``scale``: at least 1 each, so that
    a smoke run still runs every stage, and 0 (a part that is off) stays 0; ``guide_rounds``: the
    guide's rounds on its own drawings (``clip_rounds``; None: the recipe's)."""
    base = TrainConfig(seed=seed)
    return TrainConfig(seed=seed, clip_rounds=base.clip_rounds if guide_rounds is None else guide_rounds,
                       **{k: getattr(base, k) and max(1, round(getattr(base, k) * scale)) for k in SCALED_SETTINGS})


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
    from .train_clip import saved_token_rows, train_guide, train_judge  # noqa: PLC0415  (it builds on this module)

    named_frames = {"clip": bool(config.clip_rounds), "judge": bool(config.judge_frame_prompts)}
    for stage in ("clip", "judge"):   # the guide first: the judge learns from the guide's drawings
        if stage in stages:
            start = time.perf_counter()
            dvae = load_toy_dvae(out)   # the saved ones, as the optimizer will see them
            if stage == "clip":
                model = train_guide(config, log, dvae, progress)
            else:
                guide = load_toy_clip(out) if config.judge_frame_prompts else None
                model = train_judge(config, log, dvae, guide, progress)
            rows = saved_token_rows(config, named_frames[stage])
            save_weights(out / f"{stage}.safetensors", clip_state_for_saving(model, rows), meta)
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
