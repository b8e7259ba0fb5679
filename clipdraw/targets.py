"""What the optimizer pulls an image toward, as vectors in one CLIP's embedding space.

A run's targets come from its text prompts (``"a tree|blurry:-1"``), its image prompts
(``--image-prompt PATH[:WEIGHT]``) and, for an edit, the image being edited and the two
captions of the edit. ``build_targets`` turns them into a ``Targets`` for a given CLIP (the
guide, and again for the judge), so the loop only ever sees vectors. A prompt schedule
(``"a red circle^600:a blue square"``) is a list of ``Segment``, each with its own targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .config import EDIT_METHODS  # noqa: F401 (targets.EDIT_METHODS: the forms of Edit.method)
from .images import read_image
from .prompts import ImagePrompt, Prompt, Segment, parse_image_prompt, parse_schedule  # noqa: F401 (re-exported)

# --------------------------------------------------------------------------- vectors


@dataclass
class Targets:
    """One CLIP's view of what an image should become.

    - ``embeds`` (P, D) unit vectors with ``weights`` (P,): pulled toward (> 0) or pushed from (< 0);
    - ``direction`` (D,) unit, from ``origin`` (D,): an edit's text difference, the image's
      embedding should move along it from where the original image was (StyleGAN-NADA's
      directional loss), weighted ``direction_weight``;
    - ``shown`` (S, D) with ``shown_weights``: what the image is meant to show, the similarity
      reported and judged (the positive prompts; an edit's ``to`` caption);
    - ``reported``: named vectors whose similarity every frame records (an edit's to, from and
      original image).
    """

    embeds: torch.Tensor
    weights: torch.Tensor
    shown: torch.Tensor
    shown_weights: torch.Tensor
    origin: Optional[torch.Tensor] = None
    direction: Optional[torch.Tensor] = None
    direction_weight: float = 0.0
    reported: Dict[str, torch.Tensor] = field(default_factory=dict)

    def loss(self, views: torch.Tensor, kind: str) -> torch.Tensor:
        """(..., N, D) unit embeddings of N views of each image -> loss (...), one per image."""
        loss = views.new_zeros(views.shape[:-2])
        if len(self.weights):
            cos = views @ self.embeds.T                                   # (..., N, P)
            if kind == "cosine":
                per_target = -cos.mean(-2)
            else:  # spherical: squared great-circle distance
                chord = (views.unsqueeze(-2) - self.embeds).norm(dim=-1)
                per_target = 2 * torch.arcsin((chord / 2).clamp(max=1)).pow(2).mean(-2)
            loss = loss + (per_target * self.weights).sum(-1)
        if self.direction is not None and self.direction_weight:
            moved = F.normalize(views - self.origin, dim=-1)
            loss = loss + self.direction_weight * (1 - moved @ self.direction).mean(-1)
        return loss

    def similarity(self, embeds: torch.Tensor) -> torch.Tensor:
        """(..., D) unit embeddings -> (...): the weighted cosine with what the image should show."""
        return (embeds @ self.shown.T * self.shown_weights).sum(-1) / self.shown_weights.sum()

    def report(self, embeds: torch.Tensor) -> List[Dict[str, float]]:
        """(B, D) -> each image's cosine with every ``reported`` vector."""
        scores = {name: (embeds @ vector).tolist() for name, vector in self.reported.items()}
        return [{name: values[i] for name, values in scores.items()} for i in range(len(embeds))]


@dataclass
class Edit:
    """A text-diff edit of ``image`` (3, H, W) in [0, 1]: from caption ``source`` toward ``target``."""

    image: torch.Tensor
    source: str
    target: str
    method: str = "direction"
    strength: float = 1.0


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between unit vectors: ``t`` 0 gives ``a``, 1 gives ``b``."""
    omega = torch.arccos((a @ b).clamp(-1 + 1e-7, 1 - 1e-7))
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def read_image_prompts(specs: Sequence[str], size: int) -> List[Tuple[ImagePrompt, torch.Tensor]]:
    """Each ``--image-prompt`` spec with its image (3, size, size), read once for every CLIP."""
    prompts = [parse_image_prompt(spec) for spec in specs]
    return [(p, read_image(p.path, size, "image prompt")) for p in prompts]


def build_targets(clip, prompts: Sequence[Prompt], images: Sequence[Tuple[ImagePrompt, torch.Tensor]] = (),
                  edit: Optional[Edit] = None) -> Targets:
    """``clip``'s targets for text prompts, image prompts (read by ``read_image_prompts``) and an edit.

    The DALL-E 2 form of an edit (``slerp``) becomes one target: the original image's embedding
    turned toward the normalised text difference by ``strength``. The StyleGAN-NADA form
    (``direction``) pulls each view's move away from the original along the text difference."""
    vectors, weights = [], []
    if prompts:
        vectors.append(clip.encode_text([p.text for p in prompts]))
        weights += [p.weight for p in prompts]
    with torch.no_grad():
        if images:
            vectors.append(clip.encode_image(torch.stack([image for _, image in images])))
            weights += [p.weight for p, _ in images]
        if edit is not None:
            original = clip.encode_image(edit.image.unsqueeze(0))[0]
            source, target = clip.encode_text([edit.source, edit.target])
    device = vectors[0].device if vectors else original.device
    embeds = torch.cat(vectors) if vectors else torch.zeros(0, original.shape[-1], device=device)
    weights_tensor = torch.tensor(weights, device=device, dtype=torch.float32)
    positive = weights_tensor > 0
    targets = Targets(embeds, weights_tensor, embeds[positive], weights_tensor[positive])
    if edit is None:
        return targets
    direction = F.normalize(target - source, dim=0)
    targets.shown, targets.shown_weights = target[None], torch.ones(1, device=device)
    targets.reported = {"to": target, "from": source, "original": original}
    if edit.method == "slerp":
        goal = F.normalize(slerp(original, direction, edit.strength), dim=0)
        targets.embeds, targets.weights = torch.cat([targets.embeds, goal[None]]), \
            torch.cat([targets.weights, torch.ones(1, device=device)])
    else:
        targets.origin, targets.direction, targets.direction_weight = original, direction, edit.strength
    return targets


def schedule_targets(models, schedule: Sequence[Segment], config, init_pixels: Optional[torch.Tensor]
                     ) -> Tuple[List[Targets], Optional[List[Targets]]]:
    """Each segment's targets for the guide and, when ``models`` has one, the judge: the
    segment's text, ``config.image_prompts`` and, with ``config.edit_from``, the edit of
    ``init_pixels`` toward the prompt (whose text then guides only through the edit)."""
    images = read_image_prompts(config.image_prompts, models.clip.input_resolution)
    edit = (Edit(init_pixels, config.edit_from, schedule[0].prompts[0].text, config.edit_method,
                 config.edit_strength) if config.edit_from is not None else None)

    def each(clip) -> List[Targets]:
        return [build_targets(clip, () if edit else segment.prompts, images, edit) for segment in schedule]

    return each(models.clip), (each(models.judge) if models.judge is not None else None)
