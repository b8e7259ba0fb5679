"""Training the toy CLIPs, the guide and the judge: contrastive pairs, twins and hard negatives,
adversarial perturbations, and optional rounds on the guide's own drawings, named for what they show. The recipe
and its measurements: docs/toy-guidance.md."""

from __future__ import annotations

import contextlib
import copy
import multiprocessing
import pickle
import signal
import threading
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.std import tqdm

from ..augment import build_augmentations
from ..config import DEFAULT_AUGMENTATIONS, GenerationConfig, toy_config
from ..dvae import decoder_output_to_pixels
from ..models import CLIP_MEAN, CLIP_STD
from ..picking import foreground
from ..progress import progress_bar
from ..shapes import SILHOUETTE_INK, without_colour_words
from ..weights import import_clip
from . import data
from .models import build_clip, cosine_lr
from .train import TrainConfig, map_pixels, scene_batch, train_loop


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


def saved_token_rows(config: TrainConfig, named_frames: bool = False) -> torch.Tensor:
    """The token-table rows a saved toy CLIP keeps: every word of the world's captions, and,
    for a CLIP trained on drawn frames (``named_frames``: the guide's rounds, the judge's
    frames), the words the analytic judge's names for them add ("and", counts above three).
    Other rows are never trained."""
    from .specs import WORD_FOR_NUMBER  # noqa: PLC0415

    captions = [s.caption for split in ("train", "heldout") for kind in data.SCENE_KINDS
                for s in data.scenes(400, config.seed, split, kind)]
    if named_frames:
        captions.append(", ".join(WORD_FOR_NUMBER.values()) + " and")
    return caption_token_rows(captions)


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
                     targets: torch.Tensor, wrong_for: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """CLIP's symmetric loss. ``targets`` (n, n) weighs every image with the same caption as a
    positive; text features beyond the first n are wrong captions, ``negatives`` wrong images.
    ``wrong_for`` (n, wrong), optional: which images each wrong caption counts against (all by
    default). Returns the loss and the logits, masked as the loss reads them."""
    n = images.shape[0]
    batch = torch.cat([images, negatives]).contiguous(memory_format=torch.channels_last)
    image_features = F.normalize(model.encode_image(batch), dim=-1)
    logits = model.logit_scale.exp().clamp(max=100) * image_features @ text_features.T   # (n + neg, n + wrong)
    if wrong_for is not None:   # a large finite value: a zero target times log(0) would be nan
        masked = torch.cat([logits[:n, :n], logits[:n, n:].masked_fill(~wrong_for, -1e4)], dim=1)
        logits = torch.cat([masked, logits[n:]])
    image_to_text = F.cross_entropy(logits[:n], F.pad(targets, (0, logits.shape[1] - n)))
    text_to_image = F.cross_entropy(logits[:, :n].T, F.pad(targets.T, (0, logits.shape[0] - n)))
    return (image_to_text + text_to_image) / 2, logits


def train_clip(config: TrainConfig, log: list, progress: bool = True, seed: Optional[int] = None,
               dvae=None, name: str = "clip", model=None, steps: Optional[int] = None, bank=None, step_offset: int = 0,
               labelled: Optional[Union[Tuple[torch.Tensor, List[str]], Tuple[torch.Tensor, List[str], List[str]]]] = None,
               silhouette_share: float = 0.0, silhouette_frames: bool = False):
    """Contrastive CLIP on (render, caption) pairs, with clip's own tokenizer, trained to be a
    guide whose gradient draws: each scene meets its twin (one word changed, data.twin) and a
    near-miss caption, images no caption describes, the dVAE's redraws of the renders, and,
    after a warm-up, PGD perturbations that make its gradients follow shapes, not pixels
    (adversarial training; Santurkar et al. 2019). ``labelled`` (images, captions[, asked]): more
    pairs, ``config.judge_frames_per_step`` of them in each batch (``named_drawings``); a
    non-empty ``asked[j]`` (the caption image j was drawn for and does not show) joins the
    batch's wrong captions, which count against every image of the batch, or, with
    ``config.clip_asked_own_frame``, against the frames drawn for it alone.
    ``silhouette_share``: that share of the scenes (and of the wrong images) shown as
    ``silhouettes`` with their colour words taken out, so that shape is learnt apart from colour,
    for the colour-shape pairs held out of training too (``TrainConfig.clip_silhouettes``,
    ``TrainConfig.judge_silhouettes``); with ``silhouette_frames``, the ``labelled`` frames too, so
    that frames of the pairs seen in training do not tie their shapes back to their colours
    (``TrainConfig.clip_silhouette_frames``)."""
    from ..weights import import_clip  # noqa: PLC0415

    clip = import_clip()
    seed = config.seed if seed is None else seed
    model = build_clip(seed, config.clip_tower) if model is None else model
    steps = config.clip_steps if steps is None else steps
    model.train().requires_grad_(True).to(memory_format=torch.channels_last)   # faster convolutions on CPU
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.clip_lr, weight_decay=0.05)
    generator = torch.Generator().manual_seed(seed + 1 + step_offset)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    context = model.context_length
    eps = config.clip_robust_eps
    robust_from = int(config.clip_robust_from * steps) if step_offset == 0 else 0
    peak = config.clip_lr if step_offset == 0 else config.clip_lr * config.clip_round_lr
    view_augmentations = build_augmentations(DEFAULT_AUGMENTATIONS) if config.clip_view_augmentations else None

    def step(i: int) -> Dict[str, float]:
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(i, steps, peak)
        i += step_offset
        rng = np.random.default_rng([seed, i])
        scenes = scene_batch(i, config.clip_batch, seed + 7)
        if config.clip_twins:
            scenes = scenes + [data.twin(s, rng) for s in scenes]
        pixels = data.image_batch(scenes)
        if dvae is not None and config.clip_redraw > 0:
            chosen = torch.rand(len(scenes), generator=generator) < config.clip_redraw
            if chosen.any():
                pixels[chosen] = redraw(pixels[chosen], *dvae)
        captions = [s.caption for s in scenes]
        asked: List[str] = []
        frame_asked: List[str] = []
        if labelled is not None and len(labelled[1]):
            chosen = torch.randint(len(labelled[1]), (config.judge_frames_per_step,), generator=generator)
            pixels = torch.cat([pixels, labelled[0][chosen]])
            captions += [labelled[1][j] for j in chosen.tolist()]
            frame_asked = [labelled[2][j] for j in chosen.tolist()] if len(labelled) > 2 else [""] * len(chosen)
            asked = [a for a in frame_asked if a]
        pixels = _augment(pixels, generator)
        negatives = negative_images(config.clip_negative_images, generator, dvae, seed, i)
        if bank is not None and len(bank):   # the optimizer's frames that show nothing
            chosen = torch.randint(len(bank), (min(config.clip_bank_per_step, len(bank)),), generator=generator)
            negatives = torch.cat([negatives, bank[chosen]])
        negatives = _augment(negatives, generator)
        if view_augmentations is not None:   # rotated and distorted as the optimizer's views are
            with torch.random.fork_rng():
                torch.manual_seed(int(rng.integers(2 ** 62)))
                pixels, negatives = view_augmentations(pixels), view_augmentations(negatives)
        # Each image also meets a near-miss caption (one attribute changed) among its candidates.
        wrong = [data.hard_negative(s, rng) for s in scenes] if config.clip_hard_negatives else []
        if silhouette_share > 0:
            frames = frame_asked if silhouette_frames else []
            pixels, negatives, captions, wrong = _as_silhouettes(pixels, negatives, captions, wrong, len(scenes),
                                                                 silhouette_share, generator, frames)
        wrong_for = None
        if asked:   # after the silhouettes, which pair each near-miss with its scene
            kept, near_misses = set(captions), set(wrong)
            wrong = list(dict.fromkeys(wrong + [a for a in asked if a not in kept]))
            if config.clip_asked_own_frame:   # the asked caption is wrong for the frames drawn for it alone
                rows = ["" for _ in scenes] + frame_asked
                wrong_for = torch.tensor([[w in near_misses or w == a for w in wrong] for a in rows], dtype=torch.bool)
        texts = clip.tokenize(captions + wrong, context_length=context, truncate=True)
        same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float)
        targets = same / same.sum(1, keepdim=True)
        text_features = F.normalize(model.encode_text(texts), dim=-1)
        if eps > 0 and i >= robust_from:
            pixels = perturb(model, pixels, (negatives - mean) / std, text_features.detach(), targets, eps,
                             config.clip_robust_steps, generator, mean, std, wrong_for)
        loss, logits = contrastive_loss(model, (pixels - mean) / std, (negatives - mean) / std, text_features,
                                        targets, wrong_for)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = len(captions)
        accuracy = (F.pad(targets, (0, logits.shape[1] - n))[torch.arange(n), logits[:n].argmax(1)] > 0).float().mean().item()
        return {"loss": loss.item(), "acc": accuracy}

    train_loop(name, steps, step, log, progress)
    return model.eval().requires_grad_(False).to(memory_format=torch.contiguous_format)


def silhouettes(images: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) in [0, 1] as silhouettes: each foreground pixel (``picking.foreground``,
    the rule the pick's flatness statistics use) ink, the rest the toy background. Shapes,
    places and relations stay; colours go."""
    if not len(images):   # a batch where no image was drawn for silhouettes
        return images.detach().clone()
    pixels = images.detach().permute(0, 2, 3, 1).mul(255).cpu().numpy()
    drawn = torch.from_numpy(np.stack([foreground(image)[1] for image in pixels])).unsqueeze(1).to(images.device)
    ink = torch.tensor(SILHOUETTE_INK, dtype=images.dtype).view(1, 3, 1, 1) / 255
    paper = torch.tensor(data.BACKGROUND, dtype=images.dtype).view(1, 3, 1, 1) / 255
    return torch.where(drawn, ink, paper)


def _as_silhouettes(pixels: torch.Tensor, negatives: torch.Tensor, captions: List[str], wrong: List[str],
                    scenes: int, share: float, generator: torch.Generator, frames_asked: Sequence[str] = ()):
    """A batch with ``share`` of its first ``scenes`` images and of its wrong images turned into
    silhouettes, those images' captions and near misses without colour words; near misses that
    became some image's caption are dropped (a colour twin's silhouette is the scene's).
    ``frames_asked``: the caption each drawn frame after the scenes was asked for ("" where the
    judge accepts it); those frames are chosen for silhouettes at the same share, and the asked
    caption without its colours, where that is not what the frame shows, is a near miss."""
    eligible = scenes + len(frames_asked)
    shown = torch.rand(eligible, generator=generator) < share
    pixels = pixels.clone()
    pixels[:eligible][shown] = silhouettes(pixels[:eligible][shown])
    dark = torch.rand(negatives.shape[0], generator=generator) < share
    negatives = negatives.clone()
    negatives[dark] = silhouettes(negatives[dark])
    captions = [without_colour_words(c) if j < eligible and shown[j] else c for j, c in enumerate(captions)]
    wrong = wrong + [without_colour_words(w) for w, s in zip(wrong, shown.tolist()) if s]
    wrong += [without_colour_words(a) for a, s in zip(frames_asked, shown[scenes:].tolist()) if a and s]
    kept = set(captions)
    return pixels, negatives, captions, [w for w in dict.fromkeys(wrong) if w not in kept]


def perturb(model, pixels: torch.Tensor, negatives: torch.Tensor, text_features: torch.Tensor, targets: torch.Tensor,
            eps: float, steps: int, generator: torch.Generator, mean: torch.Tensor, std: torch.Tensor,
            wrong_for: Optional[torch.Tensor] = None) -> torch.Tensor:
    """PGD within an L-inf ball of radius ``eps`` (pixels in [0, 1]) that raises the loss:
    the worst nearby image, which the model then learns to read correctly."""
    delta = (torch.rand(pixels.shape, generator=generator) * 2 - 1) * eps
    for _ in range(steps):
        delta.requires_grad_(True)
        loss, _ = contrastive_loss(model, ((pixels + delta).clamp(0, 1) - mean) / std, negatives, text_features,
                                   targets, wrong_for)
        grad, = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + 2.5 * eps / steps * grad.sign()).clamp(-eps, eps)
    return (pixels + delta).clamp(0, 1).detach()


def _drawing_models(guide, decoder, encoder=None):
    """The models a drawing runs on: copies of ``guide`` and the dVAE, on the CPU, without a judge."""
    from ..dvae import DVAEDecoder, DVAEEncoder  # noqa: PLC0415
    from ..models import ClipModel, Models  # noqa: PLC0415

    return Models(clip=ClipModel(copy.deepcopy(guide)), decoder=DVAEDecoder(copy.deepcopy(decoder)),
                  encoder=None if encoder is None else DVAEEncoder(copy.deepcopy(encoder)),
                  device=torch.device("cpu"))


def _draw(models, caption: str, settings: GenerationConfig) -> List[np.ndarray]:
    """Every saved frame of one drawing of ``caption``, as (H, W, 3) arrays."""
    from ..optimize import generate  # noqa: PLC0415

    result = generate(models, caption, settings, progress=False, keep_images=True)
    return [np.asarray(f.image) for f in result.frames]


_WORKER_MODELS = None   # a drawing worker's models (_start_drawing_worker)


def _start_drawing_worker(models: bytes) -> None:
    """A drawing worker's start: ``models`` is (guide, decoder, encoder) pickled, unpickled here
    once OpenAI's ``clip`` package is imported quietly (the guide is one of its models)."""
    global _WORKER_MODELS
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle: it ends the workers
    # A worker's bars are off; tqdm's default lock is a named semaphore, which a worker ended by
    # Ctrl-C would leave behind (Python's resource tracker then warns of it at exit).
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(1)
    import_clip()
    _WORKER_MODELS = _drawing_models(*pickle.loads(models))


def _draw_in_worker(job: Tuple[str, GenerationConfig]) -> List[np.ndarray]:
    return _draw(_WORKER_MODELS, *job)


def _guide_drawings(guide, decoder, count: int, scene_seed: int, settings_at: Callable[[int], object], desc: str,
                    status: Callable[[], dict], encoder=None, progress: bool = True,
                    indices: Optional[Sequence[int]] = None, workers: int = 0):
    """Draw ``count`` training captions (single, single, relation, ...; or those of ``indices``)
    with clipdraw's own optimizer guided by copies of ``guide`` and the dVAE; yields (caption,
    every saved frame as an (H, W, 3) array) per caption, in order, the bar showing ``status()``
    after each. ``workers`` 0 draws here, at this process's torch threads; N > 0 in N processes
    of one thread each, whose drawings are the same whatever N (a one-thread drawing here is
    too), and not those of a drawing on more threads."""
    kinds = ("single", "single", "relation")
    order = list(range(count) if indices is None else indices)
    jobs = [(data.scene_at(k, scene_seed, "train", kinds[k % len(kinds)]).caption, settings_at(k)) for k in order]
    captions = [caption for caption, _ in jobs]
    pool = None
    if workers:   # spawned, not forked from a process whose torch threads run
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_start_drawing_worker,
                                                         initargs=(pickle.dumps((guide, decoder, encoder)),))
        drawn = pool.imap(_draw_in_worker, jobs)
    else:
        models = _drawing_models(guide, decoder, encoder)
        drawn = (_draw(models, caption, settings) for caption, settings in jobs)
    try:
        bar = progress_bar(drawn, total=len(jobs), desc=desc, unit="prompt", disable=not progress, dynamic_ncols=True)
        for caption, frames in zip(captions, bar):
            yield caption, frames
            bar.set_postfix(**status())
    finally:
        if pool is not None:   # Ctrl-C too: end the workers now, not after their drawings
            pool.terminate()
            pool.join()


def _as_batch(arrays: List[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 arrays -> (n, 3, H, W) in [0, 1], an empty batch for none."""
    if not arrays:
        return torch.zeros(0, 3, data.IMAGE_SIZE, data.IMAGE_SIZE)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def named_drawings(guide, dvae, count: int, scene_seed: int, settings_at: Callable[[int], object], desc: str,
                   progress: bool = True, workers: int = 0) -> Tuple[torch.Tensor, List[str], List[str], torch.Tensor]:
    """The frames ``guide`` draws through ``dvae`` (encoder, decoder) for ``count`` training
    captions, each named for what the analytic judge sees in it (``named_frames``): the images a
    CLIP must learn to read as they are, not as they were asked for. Returns (images, what each
    shows, the asked caption where the judge rejects it or "", images that show nothing)."""
    status = {"frames": 0}   # the progress bar's, kept up to date by name_drawings
    encoder, decoder = dvae   # the toy defaults start from the blank canvas: the encoder reads it
    drawings = _guide_drawings(guide, decoder, count, scene_seed, settings_at, desc,
                               lambda: status, encoder=encoder, progress=progress, workers=workers)
    with contextlib.closing(drawings):   # Ctrl-C while a drawing is named ends the workers now, not when collected
        return name_drawings(drawings, status)


def name_drawings(drawings, status: Optional[dict] = None) -> Tuple[torch.Tensor, List[str], List[str], torch.Tensor]:
    """``named_frames`` over (caption, frames) pairs, gathered: (images, what each shows, the
    asked caption where the judge rejects it or "", images that show nothing). ``status["frames"]``
    follows the count of images that show something."""
    images, shown, asked, empty = [], [], [], []
    for caption, frames in drawings:
        showing, names, wrong, nothing = named_frames(caption, frames)
        images, shown, asked, empty = images + showing, shown + names, asked + wrong, empty + nothing
        if status is not None:
            status["frames"] = len(images)
    return _as_batch(images), shown, asked, _as_batch(empty)


def labelled_frames(guide, dvae, config: TrainConfig, seed: int,
                    progress: bool = True) -> Tuple[torch.Tensor, List[str], torch.Tensor]:
    """The judge's extra pairs: the frames the guide draws for training captions at the toy
    defaults, named for what they show (``named_drawings``). Returns (images, captions, images
    that show nothing). Frames showing a held-out colour-shape pair are left out, so that those
    pairs stay unseen."""
    images, shown, _, empty = named_drawings(
        guide, dvae, config.judge_frame_prompts, seed + 23,
        lambda k: drawing_settings(config, seed + 1000 + k, config.judge_frame_iters, pick_flatness=0.0),
        "judge frames", progress, config.drawing_workers)
    return images, shown, empty


def named_frames(caption: str, frames: List[np.ndarray]) -> Tuple[List[np.ndarray], List[str], List[str], List[np.ndarray]]:
    """The frames of one drawing of ``caption``, each named for what the analytic judge sees in it
    (``judge.describe``). Returns the frames that show something, what each shows, ``caption``
    where the judge rejects the frame for it ("" where it accepts), and the frames that show
    nothing. Frames showing a held-out colour-shape pair are left out, so that those pairs stay unseen."""
    from .judge import check, describe_detections, detect  # noqa: PLC0415
    from .specs import parse_caption  # noqa: PLC0415

    spec = parse_caption(caption)
    showing, shown, asked, nothing = [], [], [], []
    for pixels in frames:
        found = detect(pixels)
        if any((d.color, d.shape) in data.HELDOUT_PAIRS for d in found):
            continue
        if not found:
            nothing.append(pixels)
            continue
        showing.append(pixels)
        shown.append(describe_detections(found))
        asked.append("" if check(spec, found) else caption)
    return showing, shown, asked, nothing


def train_judge(config: TrainConfig, log: list, dvae, guide=None, progress: bool = True, model=None):
    """The judge CLIP: the guide's recipe from another seed (or ``model``), then, with ``guide``
    and ``config.judge_frame_prompts``, trained on the guide's own frames labelled by the
    analytic judge (``labelled_frames``), so that it ranks the drawings it will be shown."""
    seed = config.seed + config.judge_seed
    recipe = config if config.judge_robust else replace(config, clip_robust_eps=0.0)   # no PGD: faster
    if model is None:
        model = train_clip(recipe, log, progress, seed=seed, dvae=dvae, name="judge",
                           silhouette_share=config.judge_silhouettes)
        _as_saved(model)
    if guide is None or not config.judge_frame_prompts:
        return model
    images, captions, empty = labelled_frames(guide, dvae, config, seed, progress)
    log.append({"stage": "judge", "step": config.clip_steps, "labelled_frames": len(captions),
                "empty_frames": len(empty)})
    return train_clip(recipe, log, progress, seed=seed, dvae=dvae, model=model, steps=config.judge_frame_steps,
                      bank=empty, step_offset=config.clip_steps, name="judge", labelled=(images, captions))


def _as_saved(model, rows: Optional[torch.Tensor] = None) -> None:
    """The weights as they are saved (half precision; with ``rows``, the other token rows, which
    saving drops, zero): training on from a model saved and reloaded then continues exactly as
    one run through."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
        if rows is not None:
            table = model.token_embedding.weight
            dropped = torch.ones(table.shape[0], dtype=torch.bool)
            dropped[rows] = False
            table[dropped] = 0


def drawing_settings(config: TrainConfig, seed: int, iters: int, **settings) -> GenerationConfig:
    """The settings the guide draws a training caption with (its rounds, the judge's frames): the
    toy defaults, but for what the recipe fixes (the iterations, the half-pictures of relations:
    ``clip_round_regions``, the views: one candidate of ``clip_round_cutn`` cutouts), so that a
    later change of those toy defaults does not change what ``clipdraw toy train`` makes; then
    ``settings``."""
    recipe = dict(seed=seed, iters=iters, region_weight=config.clip_round_regions, candidates=1,
                  cutn=config.clip_round_cutn, overview=config.clip_round_overview, shape_weight=0.0)
    return toy_config(**{**recipe, **settings})


def round_settings(config: TrainConfig, k: int) -> GenerationConfig:
    """The settings of the ``k``-th caption the guide draws in a round (``drawing_settings``)."""
    return drawing_settings(config, config.seed + 2000 + k, config.clip_round_iters)


def train_guide(config: TrainConfig, log: list, dvae, progress: bool = True, model=None, rounds_done: int = 0):
    """The guiding CLIP: train_clip (or start from ``model``, a guide that has had ``rounds_done``
    rounds), then the rest of ``config.clip_rounds`` rounds, in each of which it draws training
    captions at the toy defaults and trains on with its own frames, each named for what the
    analytic judge sees in it, the caption it was drawn for counted wrong where the judge rejects
    the frame, and frames that show nothing as wrong images. Each round starts from the weights
    in the precision they are saved in, so a training saved and reloaded continues exactly as
    one run through."""
    if model is None:
        model = train_clip(config, log, progress, dvae=dvae, silhouette_share=config.clip_silhouettes)
        _as_saved(model, saved_token_rows(config))   # as a guide saved before its rounds
    for r in range(rounds_done, config.clip_rounds):
        images, shown, asked, empty = named_drawings(
            model, dvae, config.clip_round_prompts, config.seed + 31 + r,
            lambda k: round_settings(config, k),
            f"guide round {r + 1}", progress, config.drawing_workers)
        offset = config.clip_steps + r * config.clip_round_steps
        log.append({"stage": "clip", "step": offset, "round": r + 1, "labelled_frames": len(shown),
                    "rejected_frames": sum(1 for a in asked if a), "empty_frames": len(empty)})
        model = train_clip(config, log, progress, dvae=dvae, model=model, steps=config.clip_round_steps, bank=empty,
                           step_offset=offset, name="clip", labelled=(images, shown, asked),
                           silhouette_share=config.clip_silhouettes, silhouette_frames=config.clip_silhouette_frames)
        _as_saved(model)
    return model
