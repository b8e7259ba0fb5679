#!/usr/bin/env python3
"""Routes to a toy guide that draws, and the analyses that measured them: all off in clipdraw.

Documented in docs/toy-guidance.md ("The transformer as a prior, aligned gradients, a redraw
check", "Squares: where the gap is" and "The guide taught on its own frames"). The routes that change the optimization loop patch it
here and run ``toy_success.py`` (arguments after ``--`` go to it); its workers inherit the
patches because they are forked, which this script asks for.

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

* ``shapes``: a frames folder's single-object runs counted by the shape their prompt asks for
  (runs, some frame accepted, the pick accepted, the last frame accepted, the pick's object
  reaching some border, the top border); with ``--renders N``, which shape the guide and the
  judge CLIP read on N clean renders per shape (the colour given); with ``--against-renders``,
  the guide's score of each pick through the views beside that of a clean render of each shape
  near the pick's place.

      python benchmarks/toy_routes.py shapes DIR --renders 64 --against-renders

* ``views``: the cutouts' geometric augmentations with other padding: ``--perspective-padding
  border`` repeats the edge where kornia's perspective warp fills with black; ``--affine-padding``
  replaces the affine warp's ``border``; ``--affine-degrees`` its largest rotation (15).

      python benchmarks/toy_routes.py views --perspective-padding border -- --prompts 10 --groups single --optimizer-only

  With ``--margins`` it runs nothing but prints, for each shape's caption, how far the guide's
  mean cosine over the views with a clean render of that shape exceeds that with the best clean
  render of another shape (same colour, place and views), for the padding given.

* ``ring``: a penalty on the image's outer ring (``--width`` pixels) differing from the start image
  (the blank canvas), ``--weight`` times its mean squared difference: no object of the toy world
  touches the picture's border (each stays 2 pixels inside at the top and left, 1 at the bottom
  and right), so a ring wider than that also pushes away objects the world may place there.

      python benchmarks/toy_routes.py ring --weight 3 --width 6 -- --prompts 10 --groups single --optimizer-only

* ``image-prior``: the latents made by a small convolutional net from fixed noise (a deep image
  prior, Ulyanov et al. 2018), its last layer starting at zero so that the run starts where the
  toy defaults do; Adam steps the net's weights (``--lr``). One image, one candidate.

      python benchmarks/toy_routes.py image-prior --lr 0.003 -- --prompts 3 --groups single --optimizer-only

* ``cut-negatives``: retrains the guide with a third kind of wrong image beside the cluttered and
  faded scenes: a scene rendered with its first object's centre within a quarter of its side of
  the image border, so that a quarter to three quarters of its width or height lies outside,
  which no scene of the toy world shows. These take 5 of the 16 wrong images of a step (the
  cluttered ones fall from 8 to 5, the faded from 8 to 6) and are not redrawn by the dVAE.
  Writes a weights folder as ``aligned``.

      python benchmarks/toy_routes.py cut-negatives OUT

* ``relabel``: the guide (``CLIPDRAW_TOY_WEIGHTS``'s, else the shipped one) draws ``--prompts``
  training captions (single, single, relation, ...; ``--scene-seed``, not the benchmark's) at the
  toy defaults, then trains on for ``--steps`` with its own frames in every batch, each captioned
  with what the analytic judge sees in it (``judge.describe``), and, where the judge rejects the
  frame, the caption it was drawn for among that batch's wrong captions: the optimizer's blob for
  "a red square" is shown as "a large red circle on the top", and as not "a red square". Frames
  that show nothing are wrong images for every caption; frames showing a held-out pair are left
  out. The frames are kept in OUT/relabelled.npz (``--frames`` trains on them again, without
  drawing); a second round, started from OUT, trains on its own frames only.
  (``TrainConfig.clip_rounds`` runs the same rounds inside ``train_guide``, each from its own scene
  seed and on fresh training batches, drawing on one process.) ``--asked missing`` keeps the asked caption as a
  wrong one only where an object it names is missing from the frame; ``--judge`` trains the judge
  CLIP on the frames instead of the guide.

      python benchmarks/toy_routes.py relabel OUT --prompts 40 --steps 200
      CLIPDRAW_TOY_WEIGHTS=OUT python benchmarks/toy_routes.py relabel OUT2 --scene-seed 32   # a second round
      CLIPDRAW_TOY_WEIGHTS=OUT python benchmarks/toy_routes.py relabel OUT3 --frames OUT2/relabelled.npz --asked missing

* ``rounds``: the rounds ``clipdraw toy train --guide-rounds N`` trains the guide with
  (``train_guide``), given to the guide in use, which has had ``--rounds-done`` of them already
  (default: the ``clip_rounds`` its saved recipe names).

      python benchmarks/toy_routes.py rounds OUT --rounds 5           # one round more than the shipped guide's
      CLIPDRAW_TOY_WEIGHTS=OUT python benchmarks/toy_routes.py rounds OUT6 --rounds 6
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import runpy
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from toy_picking import within_run_auc  # noqa: E402


def copy_shipped_weights(out: Path, but: str = "clip") -> None:
    """A weights folder ``out`` holding the toy models in use (``CLIPDRAW_TOY_WEIGHTS``'s, else the
    shipped ones) except ``but``, which the caller writes."""
    from clipdraw.toy.models import weights_dir  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    for name in ("dvae", "clip", "judge", "transformer"):
        if name != but:
            shutil.copy(weights_dir() / f"{name}.safetensors", out / f"{name}.safetensors")


def toy_views(views: int):
    """``views`` cutouts per image, made as the toy defaults make the optimizer's."""
    from clipdraw.augment import Cutouts  # noqa: PLC0415
    from clipdraw.config import toy_config  # noqa: PLC0415

    config = toy_config()
    return Cutouts(config.size, views, config.cut_min_scale, config.augmentations, config.cut_pow, config.overview)


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
                                     load_weights, save_weights)
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
    copy_shipped_weights(out)
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
            own = own_pick(run)
            frames = torch.from_numpy(run["images"]).permute(0, 3, 1, 2).float() / 255
        redrawn = redraw(frames, *dvae)
        closeness = -(redrawn - frames).abs().mean((1, 2, 3)).numpy() * 100   # mean change, in % of the range
        if accepted.any() and not accepted.all():
            aucs.append(within_run_auc(closeness, accepted))
        counts["some frame accepted"] += bool(accepted.any())
        counts["the run's own pick (FramePicker)"] += bool(accepted[own])
        counts["smallest redraw change"] += bool(accepted[closeness.argmax()])
        counts["FramePicker + redraw change"] += bool(accepted[(picked + closeness).argmax()])
        counts["the run's pick, redrawn"] += bool(satisfies(caption, to_pil(redrawn[own])))
    runs = len(glob.glob(os.path.join(folder, "*.npz")))
    for name, count in counts.items():
        print(f"{name}: {count} / {runs}")
    print(f"frame AUC of the redraw change: {np.mean(aucs):.2f} over {len(aucs)} runs with both verdicts")


def render_single(shape: str, colour: str, size: str, cx: float, cy: float) -> torch.Tensor:
    from clipdraw.toy import data  # noqa: PLC0415

    return data.image_batch([data.Scene("single", (data.Shape(shape, colour, size, cx, cy),), "")])[0]


def shape_reading(renders: int) -> None:
    """Which of "a <colour> circle / square / triangle" each toy CLIP ranks first for clean renders."""
    from clipdraw.models import ClipModel  # noqa: PLC0415
    from clipdraw.toy import data  # noqa: PLC0415
    from clipdraw.toy.models import load_toy_clip  # noqa: PLC0415

    rng = np.random.default_rng(0)
    scenes = []
    for shape in data.SHAPES:
        for i in range(renders):
            colour, size = list(data.COLORS)[i % 4], ("small", "large")[(i // 4) % 2]
            margin = data.SIZES[size] / 2 + 2   # placed as data.py places shapes: whole, 2 pixels in
            scenes.append((shape, colour, size, *rng.uniform(margin, data.IMAGE_SIZE - margin, 2)))
    for name in ("clip", "judge"):
        clip = ClipModel(load_toy_clip(name=name))
        confusion = np.zeros((3, 3), dtype=int)
        with torch.no_grad():
            captions = {colour: clip.encode_text([f"a {colour} {other}" for other in data.SHAPES])
                        for colour in data.COLORS}
            for shape, colour, size, cx, cy in scenes:
                texts = captions[colour]
                image = clip.encode_image(render_single(shape, colour, size, float(cx), float(cy))[None])
                confusion[data.SHAPES.index(shape), int((image @ texts.T).argmax())] += 1
        print(f"\n{name}: rows the shape drawn, columns the shape read ({renders} renders each)")
        print("| | " + " | ".join(data.SHAPES) + " |\n| --- | --- | --- | --- |")
        for shape, row in zip(data.SHAPES, confusion):
            print(f"| {shape} | " + " | ".join(str(v) for v in row) + " |")


OBJECT_AREA = 100   # pixels: a small toy triangle covers about 160, the specks of a blank canvas under 70


def largest_part(image: np.ndarray):
    """(rows, cols) of the largest 8-connected part of a frame's foreground, empty when it is
    smaller than OBJECT_AREA (nothing drawn but specks)."""
    from clipdraw.picking import foreground  # noqa: PLC0415
    from clipdraw.toy.judge import components  # noqa: PLC0415

    parts = components(foreground(image)[1], diagonal=True)
    largest = max(parts, key=lambda part: len(part[0])) if parts else ((), ())
    return largest if len(largest[0]) >= OBJECT_AREA else (np.array([], dtype=int), np.array([], dtype=int))


def own_pick(run) -> int:
    """The index of the frame a dumped run picked, at the toy defaults' ``pick_from``."""
    from clipdraw.config import toy_config  # noqa: PLC0415
    from toy_success import dumped_pick  # noqa: PLC0415

    return dumped_pick(run["iterations"], run["judge_score"], toy_config().first_pick)


def single_object_runs(folder: str):
    """(run, shape asked, colour asked) of each single-object run in a frames folder; ``run``
    holds its caption, verdicts, the judge CLIP's scores and the frames as ``toy_success.py``
    wrote them."""
    from clipdraw.toy import data  # noqa: PLC0415

    for path in sorted(glob.glob(os.path.join(folder, "*.npz"))):
        with np.load(path) as stored:
            if not str(stored["group"]).startswith("single"):
                continue
            run = {key: stored[key] for key in ("caption", "accepted", "judge_score", "iterations", "images")}
        caption = str(run["caption"])
        yield (run, next(shape for shape in data.SHAPES if shape in caption),
               next(colour for colour in data.COLORS if colour in caption))


def against_renders(folder: str, views: int = 64) -> None:
    """For each run's pick: the guide's mean cosine with the prompt over ``views`` cutouts as the
    toy defaults make them (the same views for every image), beside that of a clean render of each
    shape, in the asked colour, redrawn by the dVAE (a picture the optimizer could make): of the
    world's size nearest the pick's object, centred on it or as near as a whole shape fits. Tells a guide that prefers its blob (its optimum is
    wrong) from an optimizer that stopped short of a shape the guide prefers."""
    from clipdraw.models import ClipModel  # noqa: PLC0415
    from clipdraw.toy import data  # noqa: PLC0415
    from clipdraw.toy.judge import SIZE_THRESHOLD  # noqa: PLC0415
    from clipdraw.toy.models import load_toy_clip, load_toy_dvae  # noqa: PLC0415
    from clipdraw.toy.train_clip import redraw  # noqa: PLC0415

    clip, dvae = ClipModel(load_toy_clip()), load_toy_dvae()
    torch.manual_seed(0)
    cutouts = toy_views(views)

    def score(pixels: torch.Tensor, text: torch.Tensor) -> float:
        torch.manual_seed(1)
        return (clip.encode_image(cutouts(pixels[None])) @ text.T).mean().item()

    tally = collections.defaultdict(lambda: np.zeros(4, dtype=int))
    print("| prompt | the pick | " + " | ".join(f"a {shape} there" for shape in data.SHAPES) + " |")
    print("| --- | --- | --- | --- | --- |")
    with torch.no_grad():
        for run, asked, colour in single_object_runs(folder):
            caption, frame = str(run["caption"]), run["images"][own_pick(run)]
            rows, cols = largest_part(frame)
            if not len(rows):
                continue
            side = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
            size = "large" if side > SIZE_THRESHOLD else "small"
            margin = data.SIZES[size] / 2 + 2
            cy, cx = (np.clip((v.min() + v.max() + 1) / 2, margin, data.IMAGE_SIZE - margin) for v in (rows, cols))
            text = clip.encode_text([caption])
            pick = score(torch.from_numpy(frame.copy()).permute(2, 0, 1).float() / 255, text)
            renders = {shape: score(redraw(render_single(shape, colour, size, float(cx), float(cy))[None], *dvae)[0]
                                    .clamp(0, 1), text) for shape in data.SHAPES}
            print(f"| {caption} | {pick:.3f} | " + " | ".join(f"{renders[shape]:.3f}" for shape in data.SHAPES) + " |")
            tally[asked] += [1, renders[asked] > pick, renders["square"] > renders["circle"],
                             max(renders, key=renders.get) == asked]
    print("\n| shape asked | runs whose pick shows an object | the asked shape's render beats the pick "
          "| a square beats a circle there | the asked shape's render scores best of the three |")
    print("| --- | --- | --- | --- | --- |")
    for shape, row in sorted(tally.items()):
        print(f"| {shape} | " + " | ".join(str(v) for v in row) + " |")


def shape_counts(folder: str) -> None:
    counts = collections.defaultdict(lambda: np.zeros(6, dtype=int))
    for run, shape, _ in single_object_runs(folder):
        accepted, pick = run["accepted"], own_pick(run)
        rows, cols = largest_part(run["images"][pick])
        # the world's objects never touch the border (rows and columns 0 and 63)
        border = len(rows) > 0 and (rows.min() == 0 or cols.min() == 0 or rows.max() == 63 or cols.max() == 63)
        counts[shape] += [1, accepted.any(), accepted[pick], accepted[-1], border, len(rows) > 0 and rows.min() == 0]
    print("| shape asked | runs | some frame accepted | pick accepted | last frame accepted "
          "| the pick's object touches a border | ... the top border |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for shape, row in sorted(counts.items()):
        print(f"| {shape} | " + " | ".join(str(v) for v in row) + " |")


# --------------------------------------------------------------------------- the views, the ring, an image prior


def border_perspective(distortion_scale: float, p: float):
    """kornia's RandomPerspective with the uncovered corners filled by the nearest edge pixel, not black."""
    import kornia.augmentation as K  # noqa: PLC0415
    from kornia.geometry.transform import warp_perspective  # noqa: PLC0415

    class BorderPerspective(K.RandomPerspective):
        def apply_transform(self, input, params, flags, transform=None):  # noqa: A002 (kornia's name)
            return warp_perspective(input, transform, tuple(input.shape[-2:]), mode=flags["resample"].name.lower(),
                                    padding_mode="border", align_corners=flags["align_corners"])

    return BorderPerspective(distortion_scale=distortion_scale, p=p)


def set_view_padding(perspective: str, affine: str, distortion: float = 0.4, degrees: float = 15) -> None:
    """The toy defaults' affine and perspective augmentations (clipdraw.augment) with other padding
    (and another perspective distortion, another largest rotation)."""
    import clipdraw.augment as augment  # noqa: PLC0415

    if perspective == "border":
        augment.AUGMENTATIONS["perspective"] = lambda: border_perspective(distortion, 0.7)
    else:
        augment.AUGMENTATIONS["perspective"] = lambda: augment._kornia().RandomPerspective(
            distortion_scale=distortion, p=0.7)
    augment.AUGMENTATIONS["affine"] = lambda: augment._kornia().RandomAffine(
        degrees=degrees, translate=(0.1, 0.1), p=0.7, padding_mode=affine)


def view_margins(perspective: str, distortion: float, scenes_per_colour: int = 8, views: int = 64) -> None:
    """For each shape's caption, the guide's mean cosine over ``views`` cutouts (made as the toy
    defaults make them, the same for every render) with a clean render of that shape, minus that
    with the best clean render of another shape in the same colour and place; and how much of a
    perspective-warped view of a plain picture is black."""
    import kornia.augmentation as K  # noqa: PLC0415

    from clipdraw.models import ClipModel  # noqa: PLC0415
    from clipdraw.toy import data  # noqa: PLC0415
    from clipdraw.toy.models import load_toy_clip  # noqa: PLC0415

    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    clip = ClipModel(load_toy_clip())
    cutouts = toy_views(views)
    margins = {shape: [] for shape in data.SHAPES}
    with torch.no_grad():
        for colour in data.COLORS:
            texts = clip.encode_text([f"a picture of a {colour} {shape}" for shape in data.SHAPES])
            for i in range(scenes_per_colour):
                size = ("small", "large")[i % 2]
                cx, cy = rng.uniform(18, 46, 2)
                cosines = {}
                for shape in data.SHAPES:
                    torch.manual_seed(1000 * i + 1)   # the same views of each shape
                    cosines[shape] = (clip.encode_image(cutouts(render_single(shape, colour, size, cx, cy)[None]))
                                      @ texts.T).mean(0)
                for j, shape in enumerate(data.SHAPES):
                    others = max(cosines[other][j].item() for other in data.SHAPES if other != shape)
                    margins[shape].append(cosines[shape][j].item() - others)
    warp = border_perspective(distortion, 1.0) if perspective == "border" else K.RandomPerspective(distortion, p=1.0)
    black = (warp(torch.full((64, 3, 64, 64), 0.94)).mean(1) < 0.5).float().mean()   # 0.94: the toy background
    print(f"black share of a perspective-warped view: {black:.0%}")
    print("| shape drawn | mean margin | renders with a margin above 0 |\n| --- | --- | --- |")
    for shape, values in margins.items():
        print(f"| {shape} | {np.mean(values):+.3f} | {np.mean(np.array(values) > 0):.0%} |")


def add_ring(weight: float, width: int) -> None:
    """Extend ``Optimization.step``'s loss with the outer ring's squared difference from the start image."""
    import clipdraw.optimize as optimize  # noqa: PLC0415

    if not 0 < width < 32:
        raise SystemExit(f"the ring's width must lie between 1 and 31 pixels, got {width}")
    plain_step = optimize.Optimization.step

    def step(self, step: int):
        if self.init_pixels is None:
            raise SystemExit("the ring needs a start image (the toy defaults' blank canvas)")
        image = self.models.decoder.decode(*optimize.tempered_scores(self.logits, self.config, step - 1,
                                                                     self.generators, noisy=False),
                                           relaxation=self.relaxation)
        ring = torch.ones_like(image[:1, :1])
        ring[..., width:-width, width:-width] = 0
        difference = ((image - self.init_pixels) ** 2 * ring).sum((1, 2, 3)) / (3 * ring.sum())
        (weight * difference).sum().backward()   # accumulated before the guide's own backward
        return plain_step(self, step)

    optimize.Optimization.step = step


def add_image_prior(lr: float, width: int = 64, channels: int = 32) -> None:
    """The latents as base + net(noise): base the toy defaults' start, net a small convolutional
    net over the token grid whose last layer starts at zero (no bias: a bias would move every
    token at once). Adam steps the net instead of the latents."""
    import clipdraw.optimize as optimize  # noqa: PLC0415

    plain_init, plain_step, plain_snapshot = (optimize.Optimization.__init__, optimize.Optimization.step,
                                              optimize.Optimization.snapshot)

    def init(self, models, schedule, config, init_logits=None):
        plain_init(self, models, schedule, config, init_logits)
        if self.rows != 1 or config.ema or self.schedule is not None:
            raise SystemExit("image-prior runs one image, one candidate, no EMA, a constant learning rate")
        vocab, grid = self.logits.shape[1], self.logits.shape[-1]
        with torch.random.fork_rng():
            torch.manual_seed(config.seed + 778)
            self.prior_net = torch.nn.Sequential(
                torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.GELU(),
                torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(width, vocab, 1, bias=False))
            torch.nn.init.zeros_(self.prior_net[-1].weight)
            self.prior_noise = torch.randn(1, channels, grid, grid)
        self.prior_net, self.prior_noise = self.prior_net.to(self.logits.device), self.prior_noise.to(self.logits.device)
        self.prior_base = self.logits.detach().clone()
        self.optimizer = torch.optim.Adam(self.prior_net.parameters(), lr=lr)

    def latents(self) -> torch.Tensor:
        return (self.prior_base + self.prior_net(self.prior_noise)).contiguous(memory_format=torch.channels_last)

    def step(self, step: int):
        self.logits = latents(self)
        return plain_step(self, step)

    def snapshot(self, step: int):
        with torch.no_grad():
            self.logits = latents(self)   # after the step's update, as the plain loop shows it
        return plain_snapshot(self, step)

    optimize.Optimization.__init__, optimize.Optimization.step, optimize.Optimization.snapshot = init, step, snapshot


# --------------------------------------------------------------------------- wrong images cut by the border


def train_with_cut_negatives(out: Path) -> None:
    """The guide retrained as the shipped recipe, with every third wrong image a scene whose first
    object crosses the border; the other weights copied from the shipped folder."""
    import clipdraw.toy.train_clip as train_clip  # noqa: PLC0415
    from clipdraw.toy import data  # noqa: PLC0415
    from clipdraw.toy.train import TrainConfig, train_all  # noqa: PLC0415

    plain = train_clip.negative_images

    def negatives(n, generator, dvae=None, seed=0, step=0):
        pixels = plain(n, generator, dvae, seed, step)
        rng = np.random.default_rng([seed, step, 99])
        for i in range(2, n, 3):
            scene = data.scene_at(step * n + i, seed + 17, "train")
            first = scene.objects[0]
            edge, offset = rng.integers(4), rng.uniform(-0.25, 0.25) * first.side
            centre = offset if edge % 2 == 0 else data.IMAGE_SIZE - offset
            first = replace(first, cx=centre) if edge < 2 else replace(first, cy=centre)
            pixels[i] = data.image_batch([replace(scene, objects=(first,) + scene.objects[1:])])[0]
        return pixels

    train_clip.negative_images = negatives
    copy_shipped_weights(out)
    started = time.perf_counter()
    train_all(TrainConfig(), out, stages=("clip",))
    print(f"wrote {out} ({time.perf_counter() - started:.0f} s)")


def _draw_training_captions(indices: List[int], scene_seed: int):
    """Worker: each index's training caption drawn at the toy defaults by the guide in use, on one
    thread; (caption, frames) per index."""
    from clipdraw.config import toy_config  # noqa: PLC0415
    from clipdraw.toy.models import load_toy_clip, load_toy_dvae  # noqa: PLC0415
    from clipdraw.toy.train_clip import _guide_drawings  # noqa: PLC0415

    torch.set_num_threads(1)
    encoder, decoder = load_toy_dvae()
    return list(_guide_drawings(load_toy_clip(), decoder, len(indices), scene_seed, lambda k: toy_config(seed=2000 + k),
                                "", dict, encoder=encoder, progress=False, indices=indices))


def relabelled_frames(prompts: int, scene_seed: int):
    """The guide's frames for ``prompts`` training captions (two workers): images, what the
    analytic judge sees in each, the asked caption where the judge rejects it ("" where it accepts),
    and the frames that show nothing."""
    import multiprocessing  # noqa: PLC0415

    from clipdraw.toy.train_clip import name_drawings  # noqa: PLC0415

    with multiprocessing.get_context("fork").Pool(2) as pool:
        drawn = [d for part in pool.starmap(_draw_training_captions,
                                                  [(list(range(w, prompts, 2)), scene_seed) for w in (0, 1)])
                 for d in part]
    images, shown, asked, empty = name_drawings(drawn)
    print(f"{len(drawn)} captions drawn: {len(images)} frames showing something, "
          f"{sum(1 for a in asked if a)} of them rejected for their caption; {len(empty)} showing nothing")
    return images, shown, asked, empty


def asked_only_when_missing(shown: List[str], asked: List[str]) -> List[str]:
    """``asked`` kept only where the frame lacks an object the asked caption names (its colour and
    shape): a frame that shows "a red triangle" beside a stray circle no longer counts against
    "a red triangle"."""
    from clipdraw.toy.specs import parse_caption  # noqa: PLC0415

    kept = []
    for frame, caption in zip(shown, asked):
        if caption:
            present = {(o.color, o.shape) for o in parse_caption(frame).objects}
            caption = caption if any((o.color, o.shape) not in present for o in parse_caption(caption).objects) else ""
        kept.append(caption)
    return kept


def train_relabelled(out: Path, prompts: int, steps: int, scene_seed: int, frames: Optional[Path] = None,
                     asked_rule: str = "rejected", judge: bool = False) -> None:
    """The guide in use trained on with its own frames relabelled (``relabel``), saved into ``out``
    with the other weights in use. ``frames``: an earlier run's relabelled.npz instead of drawing;
    ``asked_rule`` "missing": ``asked_only_when_missing``; ``judge``: the judge CLIP trained on
    those frames instead of the guide (the judge's seed and recipe). Every run trains from step
    ``clip_steps`` on, so a second round replays the first round's scene batches."""
    import clipdraw.toy.train_clip as train_clip  # noqa: PLC0415
    from clipdraw.toy.models import load_toy_clip, weights_dir  # noqa: PLC0415
    from clipdraw.toy.train import TrainConfig, train_all  # noqa: PLC0415

    if out.resolve() == weights_dir().resolve():
        raise SystemExit(f"{out} holds the weights in use (CLIPDRAW_TOY_WEIGHTS); name another folder")
    started = time.perf_counter()
    if frames is not None:
        kept = np.load(frames)
        images, empty = torch.from_numpy(kept["images"]), torch.from_numpy(kept["empty"])
        shown, asked = [str(c) for c in kept["shown"]], [str(c) for c in kept["asked"]]
    else:
        images, shown, asked, empty = relabelled_frames(prompts, scene_seed)
        print(f"drawn in {time.perf_counter() - started:.0f} s")
    if asked_rule == "missing":
        asked = asked_only_when_missing(shown, asked)
    print(f"{len(shown)} frames, {sum(1 for a in asked if a)} with a wrong asked caption")

    def guide(config, log, dvae, progress=True, model=None):
        torch.set_num_threads(2)
        return train_clip.train_clip(config, log, progress, dvae=dvae, model=load_toy_clip(), steps=steps,
                                     bank=empty, step_offset=config.clip_steps, name="clip",
                                     labelled=(images, shown, asked))

    def judge_on_frames(config, log, dvae, guide=None, progress=True, model=None):
        torch.set_num_threads(2)
        return train_clip.train_clip(config, log, progress, seed=config.seed + config.judge_seed, dvae=dvae,
                                     model=load_toy_clip(name="judge"), steps=steps, bank=empty,
                                     step_offset=config.clip_steps, name="judge", labelled=(images, shown, asked))

    train_clip.train_guide, train_clip.train_judge = guide, judge_on_frames
    copy_shipped_weights(out, but="judge" if judge else "clip")
    np.savez_compressed(out / "relabelled.npz", images=images.numpy(), empty=empty.numpy(),
                        shown=np.array(shown), asked=np.array(asked))
    train_all(TrainConfig(), out, stages=("judge",) if judge else ("clip",))
    print(f"wrote {out} ({time.perf_counter() - started:.0f} s)")


def train_rounds(out: Path, rounds: int, rounds_done: Optional[int] = None, iters: Optional[int] = None,
                 asked_own_frame: bool = False, regions: float = 0.0) -> None:
    """The guide in use (``CLIPDRAW_TOY_WEIGHTS``'s, else the shipped one), which has had
    ``rounds_done`` rounds (None: as many as its saved recipe says), given the rest of
    ``TrainConfig(clip_rounds=rounds)``'s rounds by ``train_guide``, each caption drawn with ``iters``
    optimizer iterations (None: the recipe's); saved into ``out`` as ``train_all`` saves a guide,
    with the other weights in use. The round entries of the training log are printed."""
    from dataclasses import asdict, replace  # noqa: PLC0415

    from clipdraw.toy.models import (WEIGHTS_DIR, clip_state_for_saving, load_toy_clip, load_toy_dvae,  # noqa: PLC0415
                                     load_weights, save_weights, weights_dir)
    from clipdraw.toy.train import TrainConfig  # noqa: PLC0415
    from clipdraw.toy.train_clip import saved_token_rows, train_guide  # noqa: PLC0415

    if out.resolve() in (weights_dir().resolve(), WEIGHTS_DIR.resolve()):
        raise SystemExit(f"{out} holds the weights in use or the shipped ones; name another folder")
    if rounds_done is None:
        rounds_done = load_weights("clip")[1].get("train_config", {}).get("clip_rounds", 0)
    if not 0 <= rounds_done < rounds:
        raise SystemExit(f"--rounds {rounds} must exceed --rounds-done {rounds_done} (rounds the guide in use has had)")
    config = replace(TrainConfig(), clip_rounds=rounds, clip_asked_own_frame=asked_own_frame,
                     clip_round_regions=regions)
    if iters is not None:
        config = replace(config, clip_round_iters=iters)
    started, log = time.perf_counter(), []
    torch.manual_seed(config.seed)
    model = train_guide(config, log, load_toy_dvae(), model=load_toy_clip(), rounds_done=rounds_done)
    copy_shipped_weights(out)
    save_weights(out / "clip.safetensors", clip_state_for_saving(model, saved_token_rows(config, named_frames=True)),
                 {"train_config": asdict(config)})
    for entry in log:
        if "round" in entry:
            print(entry)
    print(f"wrote {out} ({time.perf_counter() - started:.0f} s)")


def run_toy_success(rest: List[str]) -> None:
    """toy_success.py in this process; its workers forked, so that they run the patched loop."""
    import multiprocessing  # noqa: PLC0415

    if "fork" not in multiprocessing.get_all_start_methods():
        raise SystemExit("these routes patch the loop that toy_success's workers run: they need fork (Linux, macOS)")
    multiprocessing.set_start_method("fork", force=True)
    sys.argv = ["toy_success.py"] + [a for a in rest if a != "--"]
    runpy.run_path(str(HERE / "toy_success.py"), run_name="__main__")


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
    shapes = routes.add_parser("shapes", help="a frames folder's runs counted by the shape asked for")
    shapes.add_argument("folder", nargs="?")
    shapes.add_argument("--renders", type=int, default=0)
    shapes.add_argument("--against-renders", action="store_true",
                        help="score each pick, and clean renders at its place, with the guide through the views")
    views = routes.add_parser("views", help="toy_success.py with the cutouts' warps padded otherwise")
    views.add_argument("--perspective-padding", choices=("zeros", "border"), default="zeros")
    views.add_argument("--affine-padding", choices=("border", "zeros", "reflection"), default="border")
    views.add_argument("--perspective-distortion", type=float, default=0.4)
    views.add_argument("--affine-degrees", type=float, default=15, help="the affine warp's largest rotation")
    views.add_argument("--margins", action="store_true", help="print the guide's shape margins, run nothing")
    views.add_argument("rest", nargs=argparse.REMAINDER)
    ring = routes.add_parser("ring", help="toy_success.py with the outer ring held to the start image")
    ring.add_argument("--weight", type=float, default=3.0)
    ring.add_argument("--width", type=int, default=6)
    ring.add_argument("rest", nargs=argparse.REMAINDER)
    image_prior = routes.add_parser("image-prior", help="toy_success.py with the latents made by a conv net")
    image_prior.add_argument("--lr", type=float, default=0.003)
    image_prior.add_argument("rest", nargs=argparse.REMAINDER)
    cut = routes.add_parser("cut-negatives", help="retrain the guide with scenes cut by the border as wrong images")
    cut.add_argument("out", type=Path)
    relabel = routes.add_parser("relabel", help="train the guide on with its own frames, captioned by the judge")
    relabel.add_argument("out", type=Path)
    relabel.add_argument("--prompts", type=int, default=40)
    relabel.add_argument("--steps", type=int, default=200)
    relabel.add_argument("--scene-seed", type=int, default=31)
    relabel.add_argument("--frames", type=Path, help="an earlier run's relabelled.npz instead of drawing")
    relabel.add_argument("--asked", choices=("rejected", "missing"), default="rejected",
                         help="the asked caption is a wrong one for every rejected frame, or only where an object it names is missing")
    relabel.add_argument("--judge", action="store_true", help="train the judge CLIP on the frames instead of the guide")
    rounds = routes.add_parser("rounds", help="the guide in use given TrainConfig(clip_rounds=N)'s rounds")
    rounds.add_argument("out", type=Path)
    rounds.add_argument("--rounds", type=int, default=2)
    rounds.add_argument("--rounds-done", type=int, help="rounds the guide in use has had already (default: its saved recipe's)")
    rounds.add_argument("--iters", type=int, help="optimizer iterations per drawn caption (default: the recipe's)")
    rounds.add_argument("--asked-own-frame", action="store_true",
                        help="a rejected frame's asked caption is wrong for that frame only (TrainConfig.clip_asked_own_frame)")
    rounds.add_argument("--regions", type=float, default=0.0,
                        help="draw relation captions with their half-pictures at this weight (TrainConfig.clip_round_regions)")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    # the patches go in before toy_success forks its workers, which inherit them
    if args.route == "prior":
        add_prior(args.weight)
        run_toy_success(args.rest)
    elif args.route == "aligned":
        torch.set_num_threads(2)
        fine_tune_aligned(args.out, args.steps, args.weight, args.lr, args.scenes,
                          (1, 2) if args.shape_only else (0, 1, 2), args.seed)
    elif args.route == "redraw":
        redraw_pick(args.folder)
    elif args.route == "shapes":
        if args.folder:
            shape_counts(args.folder)
        if args.folder and args.against_renders:
            against_renders(args.folder)
        if args.renders:
            shape_reading(args.renders)
    elif args.route == "views":
        set_view_padding(args.perspective_padding, args.affine_padding, args.perspective_distortion,
                         args.affine_degrees)
        if args.margins:
            view_margins(args.perspective_padding, args.perspective_distortion)
        else:
            run_toy_success(args.rest)
    elif args.route == "ring":
        add_ring(args.weight, args.width)
        run_toy_success(args.rest)
    elif args.route == "image-prior":
        add_image_prior(args.lr)
        run_toy_success(args.rest)
    elif args.route == "rounds":
        torch.set_num_threads(2)
        train_rounds(args.out, args.rounds, args.rounds_done, args.iters, args.asked_own_frame, args.regions)
    elif args.route == "relabel":
        train_relabelled(args.out, args.prompts, args.steps, args.scene_seed, args.frames, args.asked, args.judge)
    else:
        torch.set_num_threads(2)
        train_with_cut_negatives(args.out)


if __name__ == "__main__":
    main()
