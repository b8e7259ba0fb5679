"""CLIP's judgements of image-text pairs, as the seed documents read them.

Two readings of the same cosine similarities:

- absolute: the cosine x 100 (the "43.27" users quote) and CLIPScore, 2.5 x max(cos, 0)
  (Hessel et al. 2021), comparable across images and prompts;
- relative: softmax probabilities over candidates, with the model's own logit scale (100 for
  OpenAI's CLIPs). Over the texts for one image: "which caption is this?"; over the images for
  one text: "which of these images fits the prompt best?" (how dalle-mini's outputs are ranked).

Everything here takes unit-norm embeddings as numpy arrays and is plain arithmetic, so it is
tested against hand-computed values.
"""

from __future__ import annotations

from typing import Dict, Iterable, Sequence

import numpy as np

CLIPSCORE_WEIGHT = 2.5


def cosine_matrix(image_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
    """(I, D) and (T, D) unit vectors -> (I, T) cosines."""
    return np.asarray(image_embeds, dtype=np.float64) @ np.asarray(text_embeds, dtype=np.float64).T


def clip_score(cosine) -> np.ndarray:
    """CLIPScore: 2.5 x max(cos, 0); 2.5 stretches the usual cosines (0.2-0.4) towards [0, 1]."""
    return CLIPSCORE_WEIGHT * np.maximum(np.asarray(cosine, dtype=np.float64), 0.0)


def softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    """Numerically stable softmax along ``axis``."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def text_probabilities(cosines: np.ndarray, logit_scale: float) -> np.ndarray:
    """P(text | image): each row (one image) sums to 1 over the candidate texts."""
    return softmax(logit_scale * np.asarray(cosines, dtype=np.float64), axis=1)


def image_probabilities(cosines: np.ndarray, logit_scale: float) -> np.ndarray:
    """P(image | text): each column (one text) sums to 1 over the candidate images."""
    return softmax(logit_scale * np.asarray(cosines, dtype=np.float64), axis=0)


def rank_of(scores: Sequence[float], index: int) -> int:
    """1-based rank of ``scores[index]`` among ``scores``, highest first; ties count against it."""
    scores = np.asarray(scores, dtype=np.float64)
    return int((scores > scores[index]).sum() + (scores[np.arange(len(scores)) != index] == scores[index]).sum()) + 1


def r_precision(scores: Sequence[float], relevant: Iterable[int]) -> float:
    """Of the R best-scored candidates, the share that is relevant (R = number of relevant ones).

    CLIP R-precision of a generated image: its caption among a pool of other captions; with one
    relevant caption it is 1 when the caption comes first, else 0. Ties count against the image.
    """
    relevant = sorted(set(int(i) for i in relevant))
    if not relevant:
        raise ValueError("r_precision needs at least one relevant candidate")
    scores = np.asarray(scores, dtype=np.float64)
    hits = sum(1 for i in relevant if rank_of(scores, i) <= len(relevant))
    return hits / len(relevant)


def pair_table(image_embeds: np.ndarray, text_embeds: np.ndarray, logit_scale: float) -> Dict[str, np.ndarray]:
    """Every score of every (image, text) pair, each an (I, T) array."""
    cos = cosine_matrix(image_embeds, text_embeds)
    return {"cosine": cos, "cosine_x100": 100.0 * cos, "clip_score": clip_score(cos),
            "p_text_given_image": text_probabilities(cos, logit_scale),
            "p_image_given_text": image_probabilities(cos, logit_scale)}
