"""The judging CLIP: loaded by name (ViT-L/14 by default, downloaded like every CLIP), by
path, ``toy-judge`` (the toy world's judge CLIP, trained from another seed, never a guide: the
default for toy-world experiments) or ``toy`` (the toy world's guiding CLIP); it embeds images
and texts for the scores.

In the toy world there is also the analytic judge (``clipdraw.toy.judge``), which reads the
shapes off an image without any learned model: ``ToyVerdicts`` puts its verdict beside the
CLIP scores in compare and probe reports.

It is kept apart from the guiding CLIP because the optimizer maximises the guiding CLIP's
similarity directly: judged by the same model, its images look better than they are. When
both are the same file anyway, ``same_as`` says so and every command prints it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .. import weights
from ..errors import ClipdrawError
from ..io import center_square
from ..models import ClipModel

DEFAULT_EVAL_MODEL = "ViT-L/14"
TOY_EVAL_MODEL = "toy-judge"   # the default judging CLIP of toy-world experiments
TOY_CLIPS = {"toy": "clip", "toy-judge": "judge"}   # --eval-model name -> file in the toy weights folder
TOY_DESCRIPTIONS = {"toy": "the toy world's guiding CLIP",
                    "toy-judge": "the toy world's judge CLIP (another seed; it never guides the optimizer)"}
BATCH = 32


def clip_input(image: Image.Image, resolution: int) -> torch.Tensor:
    """CLIP's own preprocessing: shorter side to ``resolution`` (bicubic), centre crop; [0, 1]."""
    crop = center_square(image.convert("RGB"), resolution, Image.BICUBIC)
    return torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)


class Judge:
    """A frozen CLIP that turns images and texts into unit embeddings (numpy, float64)."""

    def __init__(self, clip: ClipModel, name: str, path: str, device: torch.device):
        self.clip, self.name, self.path, self.device = clip, name, path, device

    @classmethod
    def load(cls, name: str = DEFAULT_EVAL_MODEL, device: Union[str, torch.device] = "cpu",
             offline: bool = False) -> "Judge":
        """``toy-judge`` (the shipped toy judge CLIP, which never guides), ``toy`` (the shipped
        toy guiding CLIP), a CLIP name (downloaded once) or a checkpoint path."""
        target = torch.device(device) if isinstance(device, str) else device
        if name in TOY_CLIPS:
            from ..toy.models import load_toy_clip, weights_dir  # noqa: PLC0415

            check_eval_model(name)
            path = str(weights_dir() / f"{TOY_CLIPS[name]}.safetensors")
            return cls(ClipModel(load_toy_clip(name=TOY_CLIPS[name])).to(target), name, path, target)
        clip_path, clip_name = weights.resolve(name, "clip", offline=offline)
        return cls(ClipModel(weights.load_clip_module(clip_path)).to(target), clip_name, str(clip_path), target)

    @property
    def logit_scale(self) -> float:
        """The temperature CLIP was trained with (exp of its learned log-scale; 100 for OpenAI's)."""
        scale = getattr(self.clip.model, "logit_scale", None)
        return float(scale.exp()) if scale is not None else 100.0

    @property
    def info(self) -> dict:
        return {"name": self.name, "path": self.path, "input_resolution": self.clip.input_resolution,
                "logit_scale": round(self.logit_scale, 4)}

    @property
    def description(self) -> str:
        """Which CLIP judged, in words, for the reports."""
        what = TOY_DESCRIPTIONS.get(self.name)
        if not what:
            return f"{self.name} ({self.path})"
        from ..toy.models import weights_source  # noqa: PLC0415

        return f"{self.name}: {what}{weights_source(Path(self.path).parent)}"

    def same_as(self, clip_info: Optional[dict]) -> bool:
        """Whether a guiding CLIP (a run.json ``models.clip`` entry) is this very model."""
        if not clip_info:
            return False
        if clip_info.get("path"):
            try:
                return Path(clip_info["path"]).resolve() == Path(self.path).resolve()
            except OSError:
                pass
        return clip_info.get("name") == self.name

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        parts = [self.clip.encode_text(list(texts[i:i + BATCH])).cpu().double().numpy()
                 for i in range(0, len(texts), BATCH)]
        return np.concatenate(parts) if parts else np.zeros((0, 0))

    @torch.no_grad()
    def embed_images(self, images: Iterable[Image.Image]) -> np.ndarray:
        """Unit embeddings of PIL images, in batches."""
        resolution, parts, batch = self.clip.input_resolution, [], []
        for image in images:
            batch.append(clip_input(image, resolution))
            if len(batch) == BATCH:
                parts.append(self._embed(batch))
                batch = []
        if batch:
            parts.append(self._embed(batch))
        return np.concatenate(parts) if parts else np.zeros((0, 0))

    def _embed(self, batch: List[torch.Tensor]) -> np.ndarray:
        return self.clip.encode_image(torch.stack(batch).to(self.device)).cpu().double().numpy()


def check_eval_model(name: str, offline: bool = False) -> None:
    """Refuse an unknown judging CLIP, or with ``offline`` one not in the cache, before any
    generation starts (nothing is downloaded here)."""
    if name in TOY_CLIPS:
        from ..toy.models import weights_dir  # noqa: PLC0415

        path = weights_dir() / f"{TOY_CLIPS[name]}.safetensors"
        if not path.is_file():
            raise ClipdrawError(f"--eval-model {name}: {path} is missing from this clipdraw (rebuild the toy "
                                "weights with 'clipdraw toy train')")
        return
    source = weights.locate(name, "clip")
    if offline and isinstance(source, weights.WeightFile) and not source.path().is_file():
        weights.fetch(source, offline=True)   # raises, saying which URL to fetch and where to put it


# --------------------------------------------------------------------------- the toy world's analytic judge


class ToyVerdicts:
    """The analytic judge of the toy world (``clipdraw.toy.judge``, unchanged) over many images:
    per image and caption, ``accepted``, ``rejected``, or None when the caption is outside the
    judge's grammar (``parse_caption`` refuses it), and what it sees (``describe_detections``),
    which does not depend on the caption. Captions are parsed once."""

    ACCEPTED, REJECTED = "accepted", "rejected"

    def __init__(self):
        self._specs: dict = {}

    def spec(self, caption: str):
        """The judge's reading of ``caption``, or None when it cannot parse it."""
        if caption not in self._specs:
            from ..toy.judge import parse_caption  # noqa: PLC0415

            try:
                self._specs[caption] = parse_caption(caption)
            except ValueError:
                self._specs[caption] = None
        return self._specs[caption]

    def parses(self, caption: str) -> bool:
        return self.spec(caption) is not None

    def __call__(self, caption: Optional[str], image: Image.Image) -> Tuple[Optional[str], str]:
        """(verdict, what the judge sees) for ``image``, judged against ``caption``."""
        from ..toy.judge import check, describe_detections, detect  # noqa: PLC0415

        detections = detect(np.asarray(image.convert("RGB")))
        spec = self.spec(caption) if caption is not None else None
        verdict = None if spec is None else (self.ACCEPTED if check(spec, detections) else self.REJECTED)
        return verdict, describe_detections(detections)


def success_rate(verdicts: Iterable[Optional[str]]) -> Tuple[Optional[float], int]:
    """(share accepted among the images with a verdict, how many had one); (None, 0) for none."""
    given = [v for v in verdicts if v is not None]
    return (sum(v == ToyVerdicts.ACCEPTED for v in given) / len(given) if given else None), len(given)


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> Tuple[Optional[float], Optional[float]]:
    """The Wilson score interval (95% at the default ``z``) of a share of ``successes`` in
    ``trials``: a report judges a handful of images, and 3 of 6 accepted is as much 0.2 as 0.8.
    Unlike the share plus or minus its standard error, it stays inside [0, 1] and is not empty
    at 0 or n successes. (None, None) for no trials."""
    if trials <= 0:
        return None, None
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes in {trials} trials")
    share, z2 = successes / trials, z * z
    centre = (share + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z * math.sqrt(share * (1 - share) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    low = 0.0 if successes == 0 else max(0.0, centre - half)            # exact at the ends, not 1 - 1e-16
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def judged_summary(verdicts: Iterable[Optional[str]]) -> dict:
    """The summary columns of a group of toy-world results: ``judge_success`` (``success_rate``),
    its 95% interval (``judge_success_low``, ``judge_success_high``: ``wilson_interval``) and
    ``judged``, how many images had a verdict."""
    given = [v for v in verdicts if v is not None]
    share, judged = success_rate(given)
    low, high = wilson_interval(sum(v == ToyVerdicts.ACCEPTED for v in given), judged)
    return {"judge_success": share, "judge_success_low": low, "judge_success_high": high, "judged": judged}
