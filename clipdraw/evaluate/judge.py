"""The judging CLIP: loaded by name (ViT-L/14 by default, downloaded like every CLIP), by
path, or ``toy``; it embeds images and texts for the scores.

It is kept apart from the guiding CLIP because the optimizer maximises the guiding CLIP's
similarity directly: judged by the same model, its images look better than they are. When
both are the same file anyway, ``same_as`` says so and every command prints it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .. import weights
from ..errors import ClipdrawError
from ..models import ClipModel

DEFAULT_EVAL_MODEL = "ViT-L/14"
BATCH = 32


def load_image(path: Union[str, Path]) -> Image.Image:
    """An RGB image from disk, or one line saying why not."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise ClipdrawError(f"image {path} does not exist") from None
    except IsADirectoryError:
        raise ClipdrawError(f"image {path} is a folder, not an image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ClipdrawError(f"cannot read image {path}: {e}") from None


def clip_input(image: Image.Image, resolution: int) -> torch.Tensor:
    """CLIP's own preprocessing: shorter side to ``resolution`` (bicubic), centre crop; [0, 1]."""
    width, height = image.size
    scale = resolution / min(width, height)
    resized = image.convert("RGB").resize((max(resolution, round(width * scale)), max(resolution, round(height * scale))),
                                          Image.BICUBIC)
    left, top = (resized.width - resolution) // 2, (resized.height - resolution) // 2
    crop = resized.crop((left, top, left + resolution, top + resolution))
    return torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)


class Judge:
    """A frozen CLIP that turns images and texts into unit embeddings (numpy, float64)."""

    def __init__(self, clip: ClipModel, name: str, path: str, device: torch.device):
        self.clip, self.name, self.path, self.device = clip, name, path, device

    @classmethod
    def load(cls, name: str = DEFAULT_EVAL_MODEL, device: Union[str, torch.device] = "cpu",
             offline: bool = False) -> "Judge":
        """``toy`` (the shipped toy CLIP), a CLIP name (downloaded once) or a checkpoint path."""
        target = torch.device(device) if isinstance(device, str) else device
        if name == "toy":
            from ..toy.models import load_toy_clip, weights_dir  # noqa: PLC0415

            path = str(weights_dir() / "clip.safetensors")
            return cls(ClipModel(load_toy_clip()).to(target), "toy", path, target)
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
    if name == "toy":
        return
    source = weights.locate(name, "clip")
    if offline and isinstance(source, weights.WeightFile) and not source.path().is_file():
        weights.fetch(source, offline=True)   # raises, saying which URL to fetch and where to put it
