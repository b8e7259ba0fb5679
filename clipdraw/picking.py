"""Which saved frame is the result: a score that ranks a run's frames.

The judge CLIP's raw cosine between a frame and the prompt picks poorly. Measured on the toy
world (docs/toy-guidance.md, "Picking the frame"): within a run, it ranks the frames the
analytic judge accepts above those it rejects no more often than chance, and picks an accepted
frame in 4 of 40 single-object runs (blank-scene start) where 23 passed through one. What the optimizer's drift
adds is stray patches of other colours and specks beside the object, which the toy CLIPs barely
see. ``FramePicker`` scores a frame by

- a **contrastive** CLIP term: ``log P(prompt | frame)`` among the prompt and its twins (the
  same caption with one colour, shape, position or relation changed). It asks the question a
  result must answer, and, being a log-probability, sits on the same scale for any CLIP, so one
  flatness weight means the same whatever the judge. (On the toy runs it ranked frames no
  better than the raw cosine: the toy judge tells twins apart on clean renders, not on
  half-drawn frames.)
- minus a **flatness** penalty, for worlds of flat shapes on a plain ground (the toy world): the
  share of the foreground that is none of the objects' colours, plus the share outside the
  objects' largest connected parts, plus a charge for frames that show almost nothing. This
  is what turns passes into results: from the blank scene, 16 of 40 picked frames accepted
  instead of 4 (23 of 40 runs passed through one).
- plus, optionally, for a prompt naming two objects, an **object-wise** term: each object's
  caption read off one foreground part shown alone (``parts_alone``), ``log P(object | part)``
  among the object's twins, by the judge and the guide. A toy CLIP that cannot read a relation
  off a half-drawn frame may still read each object: this term ranks a frame whose two objects
  are each right above one where one is wrong.

Without twins (a prompt outside the toy grammar) and with no flatness weight, the score is the
weighted cosine the optimizer used before: the real world is unchanged unless asked.
"""

from __future__ import annotations

import itertools
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .results import eight_bit
from .toy.judge import components
from .toy.data import COLORS, OPPOSITE, POSITIONS, RELATIONS, SHAPES, SIZES, _article

_NOUN = re.compile(rf"\b(?:an?|one) (?:(?:{'|'.join(SIZES)}) )?({'|'.join(COLORS)}) ({'|'.join(SHAPES)})\b")
_RELATION = re.compile(rf" ({'|'.join(sorted(RELATIONS, key=len, reverse=True))}) ")
_POSITION = re.compile(rf"\b(in|on|at) the ({'|'.join(POSITIONS)})\b")

FOREGROUND_DISTANCE = 60.0   # RGB distance from the background beyond which a pixel is foreground
DRAWN_SHARE = 0.02           # foreground share under which a frame shows too little (a small toy triangle: 4%)
OFF_COLOUR_DISTANCE = 50.0   # distance from every background-to-object-colour blend: another colour


def _with_noun(text: str, match: re.Match, color: str, shape: str) -> str:
    """``text`` with the noun phrase ``match`` (of ``_NOUN``) given another colour and shape, its
    article and size kept ("a" or "an" fixed when the colour follows it)."""
    phrase = match.group(0)
    start = match.start()
    head = phrase[:match.start(1) - start]
    if head in ("a ", "an "):
        head = _article(color) + " "
    return text[:start] + head + color + " " + shape + text[match.end():]


def toy_twin_captions(prompt: str) -> List[str]:
    """The prompt with one thing changed, phrased as the prompt is: each object's colour and shape
    swapped for every other one, the stated position for every other one, a relation for its
    opposite, a relation's two objects swapped, and each of its objects alone. Empty when the
    prompt names no toy object (then there is nothing to contrast)."""
    nouns = list(_NOUN.finditer(prompt))
    twins: List[str] = []

    for match in nouns:
        color, shape = match.groups()
        twins += [_with_noun(prompt, match, other, shape) for other in COLORS if other != color]
        twins += [_with_noun(prompt, match, color, other) for other in SHAPES if other != shape]
    position = _POSITION.search(prompt)
    if position:
        twins += [prompt[:position.start(2)] + other + prompt[position.end(2):]
                  for other in POSITIONS if other != position.group(2)]
    relation = _RELATION.search(prompt)
    if relation and len(nouns) == 2 and nouns[0].group(0) != nouns[1].group(0):   # alike: no twin says otherwise
        first, second = nouns
        twins.append(prompt[:relation.start(1)] + OPPOSITE[relation.group(1)] + prompt[relation.end(1):])
        twins.append(prompt[:first.start()] + second.group(0) + prompt[first.end():second.start()] + first.group(0) +
                     prompt[second.end():])
        twins.append(prompt[:first.end()] + prompt[second.end():])                  # the first object alone
        twins.append(prompt[:first.start()] + second.group(0) + prompt[second.end():])  # the second alone
    return list(dict.fromkeys(t for t in twins if t != prompt))


def toy_object_count(prompt: str) -> int:
    """How many objects a toy prompt names (at least one): what the flatness statistics expect."""
    return max(1, len(_NOUN.findall(prompt)))


def foreground(pixels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(background colour, foreground mask) of an (H, W, 3) image in 0..255: the background is
    the border's median colour, the foreground every pixel farther than FOREGROUND_DISTANCE from
    it. The one rule for "what is drawn" on a plain ground (also ``toy.train_clip.silhouettes``)."""
    pixels = np.asarray(pixels, dtype=np.float32)[..., :3]
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    return background, np.linalg.norm(pixels - background, axis=-1) > FOREGROUND_DISTANCE


def parts_alone(image: np.ndarray, parts: int) -> List[np.ndarray]:
    """``parts`` copies of a frame (H, W, 3 uint8), the k-th showing only the k-th largest
    foreground part, every other foreground pixel painted the background (the frame itself where
    fewer parts exist): each object as if it were drawn alone."""
    background, mask = foreground(image)
    found = sorted(components(mask, diagonal=True), key=lambda part: -len(part[0]))[:parts]
    alone = []
    for k in range(parts):
        copy = np.array(image, copy=True)
        if k < len(found):
            keep = np.zeros_like(mask)
            keep[found[k]] = True
            copy[mask & ~keep] = np.round(background).astype(np.uint8)
        alone.append(copy)
    return alone


def flatness_statistics(image: np.ndarray, objects: int = 1) -> Dict[str, float]:
    """Statistics of one frame (H, W, 3 uint8) that need no palette and no shape rules.

    The background is the border's median colour; the foreground, pixels far from it.
    ``off_colour``: the share of the foreground that is not a blend of the background with one
    of its ``objects`` dominant colours (k-means on the strongly coloured pixels): patches of
    another colour inside or beside an object. ``stray``: the share of the foreground outside its
    ``objects`` largest connected parts. ``missing``: how far the foreground falls short of
    ``DRAWN_SHARE`` of the image, from 0 (enough drawn) to 1 (nothing): without it an empty
    frame, such as a blank start's frame 0, is flawless. All three are 0 for a clean render of a
    toy scene.
    """
    pixels = np.asarray(image, dtype=np.float32)[..., :3]
    background, mask = foreground(pixels)
    missing = max(0.0, 1 - float(mask.mean()) / DRAWN_SHARE)
    if not mask.any():
        return {"off_colour": 0.0, "stray": 0.0, "missing": missing}
    areas = np.sort([len(rows) for rows, _ in components(mask, diagonal=True)])[::-1]
    offsets = pixels[mask] - background                                     # (n, 3)
    strong = offsets[np.linalg.norm(offsets, axis=1) > 2 * FOREGROUND_DISTANCE]   # interiors, not edges
    centres = _kmeans(strong if len(strong) >= objects else offsets, objects)
    alpha = np.clip(offsets @ centres.T / np.maximum((centres ** 2).sum(1), 1e-6), 0, 1.25)   # (n, k)
    residual = np.linalg.norm(offsets[:, None, :] - alpha[..., None] * centres, axis=-1).min(1)
    return {"off_colour": float((residual > OFF_COLOUR_DISTANCE).mean()),
            "stray": 1 - float(areas[:objects].sum()) / float(mask.sum()), "missing": missing}


def _kmeans(points: np.ndarray, k: int, steps: int = 10) -> np.ndarray:
    """k centres of ``points`` (n, 3): farthest-point start, then Lloyd steps (deterministic)."""
    centres = [points[np.argmax(np.linalg.norm(points, axis=1))]]
    while len(centres) < k:
        distance = np.min([np.linalg.norm(points - c, axis=1) for c in centres], axis=0)
        centres.append(points[int(np.argmax(distance))])
    grid = np.array(centres)
    for _ in range(steps):
        nearest = np.argmin(np.linalg.norm(points[:, None] - grid[None], axis=-1), axis=1)
        grid = np.array([points[nearest == j].mean(0) if (nearest == j).any() else grid[j] for j in range(k)])
    return grid


def _logit_scale(clip) -> float:
    """The CLIP's own softmax temperature (its trained ``logit_scale``); 100, OpenAI CLIP's, for
    a stand-in without one."""
    scale = getattr(getattr(clip, "model", None), "logit_scale", None)
    return 100.0 if scale is None else float(scale.exp())


class FramePicker:
    """Scores frames for one run's prompts; the frame with the highest score is the result.
    ``clips``: the CLIPs that score (the judge; the guide could join, measured no better).

    score = sum over ``clips`` of the weighted mean, over the positive prompts, of
    ``log P(prompt | frame)`` among the prompt and its ``twins`` (the plain cosine for a prompt
    without twins), minus ``flatness_weight * (off_colour + stray + missing)``
    (``flatness_statistics``; 0 turns it off), plus ``object_weight`` times the sum over
    ``object_clips`` of the same weighted mean of ``object_scores`` (prompts naming two objects
    or more; 0 turns it off). Texts are encoded once, here; ``scores`` runs once per saved frame.
    """

    def __init__(self, clips: Sequence, prompt_texts: Sequence[str], weights: Sequence[float],
                 twins: Callable[[str], List[str]] = toy_twin_captions, flatness_weight: float = 0.0,
                 objects: Optional[int] = None, object_clips: Sequence = (), object_weight: float = 0.0):
        kept = [(text, float(w)) for text, w in zip(prompt_texts, weights) if w > 0]
        if not clips or not kept:
            raise ValueError("a frame picker needs a CLIP and a prompt of positive weight")
        self.clips = list(clips)
        self.weights = [w / sum(w for _, w in kept) for _, w in kept]
        self.groups = [[text, *twins(text)] for text, _ in kept]   # the prompt first, then its twins
        self.texts = [[clip.encode_text(group) for group in self.groups] for clip in self.clips]
        self.scales = [_logit_scale(clip) for clip in self.clips]
        self.flatness_weight = flatness_weight
        self.objects = objects if objects is not None else max(toy_object_count(t) for t, _ in kept)
        self.object_weight = object_weight
        self.nouns = [[m.group(0) for m in _NOUN.finditer(text)] for text, _ in kept]
        self.object_clips = [clip for clip in object_clips if object_weight and any(len(n) > 1 for n in self.nouns)]
        self.object_texts = [[[clip.encode_text([noun, *twins(noun)]) for noun in nouns] if len(nouns) > 1 else []
                              for nouns in self.nouns] for clip in self.object_clips]
        self.object_scales = [_logit_scale(clip) for clip in self.object_clips]

    @torch.no_grad()
    def scores(self, images: torch.Tensor) -> List[float]:
        """One score per image of (B, 3, H, W) in [0, 1]; higher is better."""
        penalties = flatness_penalties(images, self.objects) if self.flatness_weight else []
        return self.total(self.clip_scores(images), penalties, self.object_scores(images)).tolist()

    def total(self, clip_scores: torch.Tensor, penalties: Sequence[float],
              object_scores: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The score from its parts (``clip_scores``, ``flatness_penalties``, ``object_scores``;
        None: without that term), for callers that reuse a part: the penalties do not depend on
        the CLIP."""
        score = clip_scores
        if self.flatness_weight:
            score = score - torch.tensor([self.flatness_weight * p for p in penalties])
        return score if object_scores is None else score + self.object_weight * object_scores

    @torch.no_grad()
    def clip_scores(self, images: torch.Tensor) -> torch.Tensor:
        """The CLIP term alone, (B,) float32 on the CPU: what ``scores`` is without flatness."""
        total = torch.zeros(images.shape[0])
        for clip, texts, scale in zip(self.clips, self.texts, self.scales):
            embeds = clip.encode_image(images)
            for weight, text in zip(self.weights, texts):
                cos = (embeds @ text.T).float().cpu()                       # (B, 1 + twins)
                part = cos[:, 0] if cos.shape[1] == 1 else torch.log_softmax(cos * scale, dim=-1)[:, 0]
                total += weight * part
        return total

    @torch.no_grad()
    def object_scores(self, images: torch.Tensor) -> torch.Tensor:
        """The object-wise term before its weight, (B,) float32 on the CPU: per prompt naming n >= 2
        objects, the n largest foreground parts each shown alone, and the mean over the objects of
        ``log P(object | its part)`` among the object's twins, for the matching of objects to parts
        that reads best; summed over ``object_clips``. Zeros when there is no such prompt."""
        total = torch.zeros(images.shape[0])
        if not self.object_clips:
            return total
        pixels = eight_bit(images)
        for index, (weight, nouns) in enumerate(zip(self.weights, self.nouns)):
            if len(nouns) > 1:
                for clip, texts, scale in zip(self.object_clips, self.object_texts, self.object_scales):
                    total += weight * read_objects_alone(clip, texts[index], scale, pixels, images)
        return total


@torch.no_grad()
def read_objects_alone(clip, object_texts: Sequence[torch.Tensor], scale: float, pixels: np.ndarray,
                       like: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B,) float32 on the CPU: for frames ``pixels`` (B, H, W, 3 uint8), the mean over n objects of
    ``log P(object | its part)`` at softmax temperature ``scale``, each object's part being one of
    the n largest foreground parts shown alone (``parts_alone``), matched to the objects the way
    that reads best. ``object_texts``: per object, the text embeddings of its caption, then its twins.
    The views go to ``like``'s device and dtype (the frames they came from; float32 on the CPU if none)."""
    count = len(object_texts)
    views = np.stack([part for image in pixels for part in parts_alone(image, count)])
    views = torch.from_numpy(views).permute(0, 3, 1, 2).float().div(255)
    views = views if like is None else views.to(like.device, like.dtype)
    embeds = clip.encode_image(views).view(len(pixels), count, -1)
    reads = [torch.log_softmax((embeds @ text.T).float() * scale, -1)[..., 0].cpu() for text in object_texts]
    matchings = [torch.stack([reads[i][:, part] for i, part in enumerate(order)]).mean(0)
                 for order in itertools.permutations(range(count))]      # (B,) per matching of objects to parts
    return torch.stack(matchings).max(0).values


def flatness_penalties(images: torch.Tensor, objects: int) -> List[float]:
    """off_colour + stray + missing (``flatness_statistics``) of each image of (B, 3, H, W) in
    [0, 1], as 8-bit pixels: the CLIP-free part of ``FramePicker.scores``, before its weight."""
    return [sum(flatness_statistics(image, objects).values()) for image in eight_bit(images)]


def frame_pickers(models, schedule, config) -> Optional[List[Optional[FramePicker]]]:
    """One ``FramePicker`` (the judge CLIP, ``config.pick_flatness``; the judge and the guide
    reading each object, ``config.pick_objects``) per schedule segment, None
    where frames keep the judge's plain cosine: no judge, no flatness weight, an edit or image
    prompts (whose targets are not captions), or a segment with nothing to draw toward."""
    if models.judge is None or not (config.pick_flatness or config.pick_objects) or config.edit_from is not None or config.image_prompts:
        return None
    return [FramePicker([models.judge], [p.text for p in segment.prompts], [p.weight for p in segment.prompts],
                        flatness_weight=config.pick_flatness, object_clips=[models.judge, models.clip],
                        object_weight=config.pick_objects)
            if any(p.weight > 0 for p in segment.prompts) else None for segment in schedule]
