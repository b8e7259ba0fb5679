#!/usr/bin/env python3
"""Two routes to a guide that draws, each measured through ``toy_success.py`` (docs/toy-guidance.md,
"The transformer as a prior, aligned gradients, a redraw check"). Both are off in clipdraw; this
script keeps them re-runnable without touching the optimization loop.

* ``prior``: the toy transformer's negative log-likelihood of the optimizer's straight-through
  tokens, given the prompt, added to the loss (``--weight`` per token, mean over the grid): a
  learned, prompt-conditioned prior over token arrangements. Runs ``toy_success.py`` with the
  loss so extended; arguments after ``--`` go to it.

      python benchmarks/toy_routes.py prior --weight 0.1 -- --prompts 10 --groups single --optimizer-only

* ``aligned``: fine-tunes the shipped guide with a perceptually-aligned-gradient loss (Ganz,
  Kawar and Elad, ICML 2023): from a degraded scene (faded toward the background, blurred, or
  with dVAE tokens replaced at random), the guide's input gradient toward the scene's caption
  should point at the clean scene. The contrastive loss of its training continues beside it.
  Writes a weights folder (the shipped dVAE, judge and transformer beside the new guide) to
  measure with ``CLIPDRAW_TOY_WEIGHTS=OUT python benchmarks/toy_success.py ...``.

      python benchmarks/toy_routes.py aligned OUT --steps 300 --weight 1

* ``redraw``: whether a frame's dVAE round trip (encode, decode) tells accepted frames from the
  rest, as a pick, on frames written by ``toy_success.py --dump-frames DIR``.

      python benchmarks/toy_routes.py redraw DIR
"""

from __future__ import annotations

import argparse
import glob
import os
import runpy
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- the transformer as a prior


def token_nll(gpt, words: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per image of ``tokens`` (B, positions, vocab), one-hot or
    relaxed, given the caption's word ids: the GPT's forward with the token embeddings looked up
    as a product, so the gradient reaches the tokens both as targets and as context."""
    table = gpt.image_embed.weight
    start = table[gpt.image_vocab].expand(tokens.shape[0], 1, -1)
    image = torch.cat([start, tokens[:, :-1] @ table[:gpt.image_vocab]], 1)
    x = torch.cat([gpt.text_embed(words), image], 1)
    length = x.shape[1]
    x = gpt.blocks(x + gpt.position[:length], mask=gpt.causal[:length, :length], is_causal=True)
    log_probs = F.log_softmax(gpt.head(gpt.norm(x[:, gpt.text_len:])), -1)
    return -(tokens * log_probs).sum(-1).mean(-1)


def add_prior(weight: float) -> None:
    """Extend ``Optimization.step``'s loss with ``weight`` times the transformer's NLL of the
    tokens the decoder reads, straight-through at the toy defaults (the gradient is accumulated
    before the guide's own backward)."""
    import clipdraw.optimize as optimize  # noqa: PLC0415
    from clipdraw.toy.models import load_toy_gpt  # noqa: PLC0415

    gpt, tokenizer = load_toy_gpt()
    gpt.requires_grad_(False)
    plain_init, plain_step = optimize.Optimization.__init__, optimize.Optimization.step

    def init(self, models, schedule, config, init_logits=None):
        plain_init(self, models, schedule, config, init_logits)
        self.prior_words = tokenizer.encode([schedule[0].text]).expand(self.rows, -1)

    def step(self, step: int):
        # the tokens the decoder reads (optimize.relax), without sampling noise: the run's random draws stay its own
        relaxed = optimize.relax(self.logits, self.config, step - 1, self.generators, noisy=False)
        tokens = relaxed.permute(0, 2, 3, 1).flatten(1, 2)   # row-major, as the GPT reads them
        (weight * token_nll(gpt, self.prior_words, tokens)).sum().backward()
        return plain_step(self, step)

    optimize.Optimization.__init__, optimize.Optimization.step = init, step


# --------------------------------------------------------------------------- aligned gradients


def blur(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Each image blurred by a Gaussian of its own sigma (pixels), edges repeated."""
    taps = torch.arange(9, dtype=torch.float) - 4
    out = []
    for image, sigma in zip(images, sigmas.tolist()):
        kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
        kernel = (kernel / kernel.sum()).repeat(3, 1, 1)
        x = F.conv2d(F.pad(image[None], (4, 4, 0, 0), mode="replicate"), kernel.view(3, 1, 1, 9), groups=3)
        out.append(F.conv2d(F.pad(x, (0, 0, 4, 4), mode="replicate"), kernel.view(3, 1, 9, 1), groups=3)[0])
    return torch.stack(out)


def degrade(clean: torch.Tensor, dvae, generator: torch.Generator, kinds=(0, 1, 2)) -> torch.Tensor:
    """Scenes made as the optimizer's frames go wrong: faded toward the background (kind 0),
    blurred (1: corners rounded), or with 10-30% of their dVAE tokens replaced (2: stray patches)."""
    from clipdraw.toy import data  # noqa: PLC0415
    from clipdraw.toy.train_clip import redraw  # noqa: PLC0415

    n = clean.shape[0]
    kind = torch.tensor(kinds)[torch.arange(n) % len(kinds)].view(n, 1, 1, 1)
    background = torch.tensor(data.BACKGROUND, dtype=torch.float).view(1, 3, 1, 1) / 255
    faded = clean + (background - clean) * (0.3 + 0.6 * torch.rand(n, 1, 1, 1, generator=generator))
    blurred = blur(clean, 1.0 + 2.0 * torch.rand(n, generator=generator))
    cluttered = redraw(clean, *dvae, corrupt=(0.1, 0.3), generator=generator)
    out = torch.where(kind == 0, faded, torch.where(kind == 1, blurred, cluttered))
    return (out + 0.02 * torch.randn(out.shape, generator=generator)).clamp(0, 1)


def alignment_loss(model, degraded: torch.Tensor, clean: torch.Tensor, text_features: torch.Tensor,
                   mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """1 - cos(d cos(image, caption) / d image, clean - image), averaged: zero when climbing the
    guide's similarity leads straight back to the clean scene. Differentiable in the model
    (double backward; the attention pool then needs the math kernel)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: PLC0415

    degraded = degraded.clone().requires_grad_(True)
    with sdpa_kernel(SDPBackend.MATH):
        features = F.normalize(model.encode_image(((degraded - mean) / std).contiguous(
            memory_format=torch.channels_last)), dim=-1)
    similarity = (features * text_features).sum(-1)
    gradient, = torch.autograd.grad(similarity.sum(), degraded, create_graph=True)
    direction = clean - degraded.detach()
    return (1 - F.cosine_similarity(gradient.flatten(1), direction.flatten(1), dim=1)).mean()


def fine_tune_aligned(out: Path, steps: int, weight: float, lr: float, aligned_scenes: int, kinds, seed: int) -> None:
    from clipdraw.models import CLIP_MEAN, CLIP_STD  # noqa: PLC0415
    from clipdraw.toy import data  # noqa: PLC0415
    from clipdraw.toy.models import (clip_state_for_saving, cosine_lr, load_toy_clip, load_toy_dvae,  # noqa: PLC0415
                                     load_weights, save_weights, weights_dir)
    from clipdraw.toy.train import TrainConfig, scene_batch  # noqa: PLC0415
    from clipdraw.toy.train_clip import _augment, contrastive_loss, negative_images, redraw  # noqa: PLC0415
    from clipdraw.weights import import_clip  # noqa: PLC0415

    torch.manual_seed(seed)
    config, tokenize = TrainConfig(), import_clip().tokenize
    state, meta = load_weights("clip")
    model = load_toy_clip().train().requires_grad_(True).to(memory_format=torch.channels_last)
    dvae = load_toy_dvae()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    generator = torch.Generator().manual_seed(seed + 100)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    started = time.perf_counter()
    for i in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(i, steps, lr, warmup=10)
        rng = np.random.default_rng([seed, i])
        scenes = scene_batch(i + 5000, config.clip_batch, seed + 7)   # steps the guide's training did not use
        scenes = scenes + [data.twin(s, rng) for s in scenes]
        pixels = data.image_batch(scenes)
        chosen = torch.rand(len(scenes), generator=generator) < config.clip_redraw
        pixels[chosen] = redraw(pixels[chosen], *dvae)
        captions = [s.caption for s in scenes]
        negatives = _augment(negative_images(config.clip_negative_images, generator, dvae, seed, i + 5000), generator)
        wrong = [data.hard_negative(s, rng) for s in scenes]
        same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float)
        text_features = F.normalize(model.encode_text(tokenize(captions + wrong, context_length=model.context_length,
                                                               truncate=True)), dim=-1)
        loss, _ = contrastive_loss(model, (_augment(pixels, generator) - mean) / std, (negatives - mean) / std,
                                   text_features, same / same.sum(1, keepdim=True))
        clean = data.image_batch(scenes[:aligned_scenes])
        aligned = alignment_loss(model, degrade(clean, dvae, generator, kinds), clean,
                                 text_features[:aligned_scenes], mean, std)
        optimizer.zero_grad(set_to_none=True)
        (loss + weight * aligned).backward()
        optimizer.step()
        if i % 25 == 0 or i == steps - 1:
            print(f"step {i}: contrastive {loss.item():.3f}, 1 - alignment {aligned.item():.3f}, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    model = model.eval().requires_grad_(False).to(memory_format=torch.contiguous_format)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("dvae", "judge", "transformer"):
        shutil.copy(weights_dir() / f"{name}.safetensors", out / f"{name}.safetensors")
    save_weights(out / "clip.safetensors", clip_state_for_saving(model, state["token_embedding.rows"]), meta)
    print(f"wrote {out} ({time.perf_counter() - started:.0f} s)")


# --------------------------------------------------------------------------- the redraw check


def redraw_pick(folder: str) -> None:
    from clipdraw.results import to_pil  # noqa: PLC0415
    from clipdraw.toy.judge import satisfies  # noqa: PLC0415
    from clipdraw.toy.models import load_toy_dvae  # noqa: PLC0415
    from clipdraw.toy.train_clip import redraw  # noqa: PLC0415

    dvae = load_toy_dvae()
    counts = dict.fromkeys(("some frame accepted", "the run's own pick (FramePicker)", "smallest redraw change",
                            "FramePicker + redraw change", "the run's pick, redrawn"), 0)
    aucs = []
    for path in sorted(glob.glob(os.path.join(folder, "*.npz"))):
        with np.load(path) as run:
            caption, accepted, picked = str(run["caption"]), run["accepted"], run["judge_score"]
            frames = torch.from_numpy(run["images"]).permute(0, 3, 1, 2).float() / 255
        redrawn = redraw(frames, *dvae)
        closeness = -(redrawn - frames).abs().mean((1, 2, 3)).numpy() * 100   # mean change, in % of the range
        if accepted.any() and not accepted.all():
            aucs.append(np.mean([(a > r) + 0.5 * (a == r) for a in closeness[accepted] for r in closeness[~accepted]]))
        counts["some frame accepted"] += bool(accepted.any())
        counts["the run's own pick (FramePicker)"] += bool(accepted[picked.argmax()])
        counts["smallest redraw change"] += bool(accepted[closeness.argmax()])
        counts["FramePicker + redraw change"] += bool(accepted[(picked + closeness).argmax()])
        counts["the run's pick, redrawn"] += bool(satisfies(caption, to_pil(redrawn[picked.argmax()])))
    runs = len(glob.glob(os.path.join(folder, "*.npz")))
    for name, count in counts.items():
        print(f"{name}: {count} / {runs}")
    print(f"frame AUC of the redraw change: {np.mean(aucs):.2f} over {len(aucs)} runs with both verdicts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    routes = parser.add_subparsers(dest="route", required=True)
    prior = routes.add_parser("prior", help="toy_success.py with the transformer's NLL in the loss")
    prior.add_argument("--weight", type=float, default=0.1)
    prior.add_argument("rest", nargs=argparse.REMAINDER, help="-- then toy_success.py's arguments")
    aligned = routes.add_parser("aligned", help="fine-tune the guide with aligned gradients into a weights folder")
    aligned.add_argument("out", type=Path)
    aligned.add_argument("--steps", type=int, default=300)
    aligned.add_argument("--weight", type=float, default=1.0)
    aligned.add_argument("--lr", type=float, default=3e-4)
    aligned.add_argument("--scenes", type=int, default=24, help="scenes per step given the alignment loss")
    aligned.add_argument("--shape-only", action="store_true", help="only blurred and cluttered scenes, not faded")
    aligned.add_argument("--seed", type=int, default=0)
    redraw = routes.add_parser("redraw", help="the dVAE round trip as a frame picker")
    redraw.add_argument("folder")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    if args.route == "prior":
        add_prior(args.weight)   # before toy_success forks its workers, which inherit it
        sys.argv = ["toy_success.py"] + [a for a in args.rest if a != "--"]
        runpy.run_path(str(HERE / "toy_success.py"), run_name="__main__")
    elif args.route == "aligned":
        torch.set_num_threads(2)
        fine_tune_aligned(args.out, args.steps, args.weight, args.lr, args.scenes,
                          (1, 2) if args.shape_only else (0, 1, 2), args.seed)
    else:
        redraw_pick(args.folder)


if __name__ == "__main__":
    main()
