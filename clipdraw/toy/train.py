"""Train the toy world from scratch: dVAE, then CLIP, then the transformer over dVAE tokens.

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

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..models import CLIP_MEAN, CLIP_STD, LOGIT_LAPLACE_EPS
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
    clip_steps: int = 1500
    clip_batch: int = 128
    clip_lr: float = 1e-3
    clip_hard_negatives: bool = True   # a near-miss caption per image (see data.hard_negative)
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
        soft = F.softmax((logits + config.dvae_noise * gumbel_noise(logits, generator)) / tau, dim=1)
        if i >= config.dvae_hard_from * config.dvae_steps:
            hard = F.one_hot(soft.argmax(1), vocab).permute(0, 3, 1, 2).float()
            soft = hard + soft - soft.detach()
        pixels = torch.sigmoid(decoder(soft)[:, :3])
        reconstruction = F.mse_loss(pixels, x)
        # Codebook usage: keep the batch's average code distribution spread (else a tiny dVAE
        # collapses onto a couple of codes and the decoder learns the mean image).
        usage = F.softmax(logits, dim=1).mean(dim=(0, 2, 3))
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


def train_clip(config: TrainConfig, log: list, progress: bool = True):
    """Contrastive CLIP on (render, caption) pairs, with clip's own tokenizer."""
    from ..weights import import_clip  # noqa: PLC0415

    clip = import_clip()
    model = build_clip(config.seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.clip_lr, weight_decay=0.05)
    generator = torch.Generator().manual_seed(config.seed + 1)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    context = model.context_length

    def step(i: int) -> Dict[str, float]:
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(i, config.clip_steps, config.clip_lr)
        scenes = _batch(i, config.clip_batch, config.seed + 7)
        images = (_augment(data.image_batch(scenes), generator) - mean) / std
        # Each image also meets a near-miss caption (one attribute changed) among its candidates.
        rng = np.random.default_rng([config.seed, i])
        negatives = [data.hard_negative(s, rng) for s in scenes] if config.clip_hard_negatives else []
        texts = clip.tokenize([s.caption for s in scenes] + negatives, context_length=context, truncate=True)
        image_features = F.normalize(model.encode_image(images), dim=-1)
        text_features = F.normalize(model.encode_text(texts), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * image_features @ text_features.T   # (B, B + negatives)
        # Several scenes can share a caption: treat every identical caption as a positive.
        same = torch.tensor([[a.caption == b.caption for b in scenes] for a in scenes], dtype=torch.float)
        targets = same / same.sum(1, keepdim=True)
        n = len(scenes)
        image_to_text = F.cross_entropy(logits, F.pad(targets, (0, logits.shape[1] - n)))
        loss = (image_to_text + F.cross_entropy(logits[:, :n].T, targets.T)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        accuracy = (logits.argmax(1) == torch.arange(n)).float().mean().item()
        return {"loss": loss.item(), "acc": accuracy}

    _loop("clip", config.clip_steps, step, log, progress)
    return model.eval().requires_grad_(False)


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


def train_all(config: Optional[TrainConfig] = None, out: Path = WEIGHTS_DIR, stages=("dvae", "clip", "transformer"),
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
    if "clip" in stages:
        start = time.perf_counter()
        model = train_clip(config, log, progress)
        rows = caption_token_rows([s.caption for split in ("train", "heldout") for kind in data.SCENE_KINDS
                                   for s in data.scenes(400, config.seed, split, kind)])
        save_weights(out / "clip.safetensors", clip_state_for_saving(model, rows), meta)
        seconds["clip"] = time.perf_counter() - start
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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(merged, indent=1))
    tmp.replace(path)
