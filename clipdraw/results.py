"""What every engine hands back: frames as the image forms, and a result.

Each engine derives its own result from ``Result`` (the optimizer's ``GenerationResult``, the
transformer's ``SamplingResult``, dalle-mini's ``DalleMiniResult``), adding what only it has;
``clipdraw.outputs.RunWriter`` and the evaluation commands read any of them through the
fields and methods defined here, without asking which engine made it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from .prompts import Prompt


@dataclass
class Frame:
    """A snapshot of the image as it forms: after an optimizer step, or a number of sampled tokens.

    ``image`` is None in a result's frames other than the chosen and the last one, unless the
    run was asked to keep every image (``keep_images=True``): the frames' files hold them."""

    iteration: int
    image: Optional[Image.Image]
    similarity: float   # CLIP cosine of the whole image with the positive prompts
    judge_score: Optional[float] = None   # the judge's ranking score (higher: better): the judge CLIP's cosine,
                                          # or with pick_flatness clipdraw.picking.FramePicker's score
    scores: Dict[str, float] = field(default_factory=dict)   # more named cosines (an edit's to, from, original)
    prompt: Optional[str] = None          # the prompt in force, when a schedule changes it during the run


def best_frame(frames: Sequence[Frame], first_pick: int = 0) -> Optional[Frame]:
    """The judge's best frame (the earliest of equals) among those made for the last prompt of a
    schedule, from iteration ``first_pick`` on when any was saved there; the last frame when none
    was judged."""
    if not frames:
        return None
    if frames[-1].judge_score is None:
        return frames[-1]
    last = [f for f in frames if f.prompt == frames[-1].prompt]
    pickable = [f for f in last if f.iteration >= first_pick] or last
    return max(pickable, key=lambda f: (f.judge_score, -f.iteration))


def eight_bit(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8 on the CPU: frames as they are saved."""
    return images.detach().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> PIL RGB."""
    return Image.fromarray(np.ascontiguousarray(eight_bit(image[None])[0]), "RGB")


@dataclass
class Result:
    """One generation: the image, the frames it went through, and how long it took.

    ``config`` is the engine's own settings dataclass (with a ``seed``); ``iterations_done`` counts the engine's
    steps (``step_unit``: optimizer updates, or image tokens sampled)."""

    prompt: str
    prompts: List[Prompt]
    config: Any
    image: Image.Image
    frames: List[Frame]
    iterations_done: int
    seconds: float
    interrupted: bool = False

    step_unit: ClassVar[str] = "iteration"

    @property
    def first_pick(self) -> int:
        """The first iteration whose frame may be the result (earlier ones when none later was saved)."""
        return 0

    @property
    def chosen_frame(self) -> Optional[Frame]:
        """The frame that is the result: the judge's best when a judge scored the frames, else the last."""
        return best_frame(self.frames, self.first_pick)

    @property
    def final_similarity(self) -> float:
        """The guide's similarity of what final.png shows."""
        return self.chosen_frame.similarity if self.frames else float("nan")

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(self.iterations_done, 1)

    def kept_images(self) -> List[Tuple[Image.Image, float]]:
        """Images written beside final.png, best first, with their scores (none by default)."""
        return []

    def summary(self) -> dict:
        """The run.json fields every engine writes; engines add their own."""
        return {"prompt": self.prompt, "prompts": [asdict(p) for p in self.prompts],
                "seed": self.config.seed, "settings": asdict(self.config),
                "iterations_done": self.iterations_done, "interrupted": self.interrupted,
                "seconds": round(self.seconds, 3), "seconds_per_iteration": round(self.seconds_per_iteration, 5),
                "final_similarity": self.final_similarity}
