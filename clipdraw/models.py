"""The two frozen networks the optimizer drives: the dVAE decoder (``clipdraw.dvae``: token
scores -> image) and CLIP (text and images -> unit-norm embeddings), here behind a small
wrapper that reads its sizes from the loaded weights; and ``load_models``, which loads both."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import weights
from .config import clip_model_names
from .device import resolve_device, resolve_precision
from .dvae import DVAEDecoder, DVAEEncoder

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class RecomputedSequential(nn.Sequential):
    """``nn.Sequential`` that, while ``recompute`` is on and gradients are wanted, keeps only
    each child's input for backward and recomputes the rest (activation checkpointing)."""

    recompute = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.recompute and torch.is_grad_enabled()):
            return super().forward(x)
        for block in self:
            x = checkpoint(block, x, use_reentrant=False, preserve_rng_state=False)
        return x


class ClipModel(nn.Module):
    """OpenAI CLIP, frozen, taking images in [0, 1] and raw strings, returning unit vectors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        # The vision transformer's residual blocks, made recomputable (same children, same state-dict
        # keys); ResNet CLIPs have none and keep their activations.
        transformer = getattr(model.visual, "transformer", None)
        self.image_blocks = None
        if transformer is not None and type(transformer.resblocks) is nn.Sequential:
            transformer.resblocks = self.image_blocks = RecomputedSequential(*transformer.resblocks)
        self.input_resolution = int(model.visual.input_resolution)
        self.context_length = int(model.context_length)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        clip = weights.import_clip()
        tokens = clip.tokenize(list(texts), context_length=self.context_length, truncate=True)
        return F.normalize(self.model.encode_text(tokens.to(self.mean.device)).float(), dim=-1)

    def encode_image(self, images: torch.Tensor, low_memory: bool = False) -> torch.Tensor:
        """Images of any size in [0, 1]; resized to the model's input resolution when needed.

        ``low_memory``: recompute the vision transformer's blocks in backward instead of keeping
        their activations (one more forward of them; a tenth of the memory at 32 cutouts)."""
        images = images.to(self.mean.device)
        if images.shape[-1] != self.input_resolution or images.shape[-2] != self.input_resolution:
            images = F.interpolate(images, size=(self.input_resolution,) * 2, mode="bilinear",
                                   align_corners=False, antialias=True)
        if self.image_blocks is None or not low_memory:
            return F.normalize(self.model.encode_image((images - self.mean) / self.std).float(), dim=-1)
        self.image_blocks.recompute = True
        try:
            return F.normalize(self.model.encode_image((images - self.mean) / self.std).float(), dim=-1)
        finally:
            self.image_blocks.recompute = False


class ClipEnsemble(nn.Module):
    """Several CLIPs guiding as one (``--clip-model ViT-B/32,ViT-B/16``): each member's unit
    embedding divided by sqrt(K), concatenated. The result is a unit vector whose cosine with an
    ensemble text embedding is the mean of the members' cosines, so targets, losses and reports
    work on it unchanged, and the gradient is the average of the members' gradients: a
    direction that fools one CLIP and not the others counts for less."""

    def __init__(self, members: Sequence[ClipModel]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two CLIPs")
        self.members = nn.ModuleList(members)
        self.input_resolution = max(m.input_resolution for m in members)   # each member resizes to its own
        self.weight = len(members) ** -0.5

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.cat([m.encode_text(texts) for m in self.members], dim=-1) * self.weight

    def encode_image(self, images: torch.Tensor, low_memory: bool = False) -> torch.Tensor:
        return torch.cat([m.encode_image(images, low_memory=low_memory) for m in self.members], dim=-1) * self.weight


@dataclass
class Models:
    """Everything a generation needs, loaded once and reused across prompts."""

    clip: ClipModel
    decoder: DVAEDecoder
    device: torch.device
    info: dict = field(default_factory=dict)  # names, paths and hashes, for run.json
    judge: Optional[ClipModel] = None         # a CLIP that never guides: it ranks the saved frames
    precision: Optional[torch.dtype] = None   # of the decoder and CLIP's autocast; None: half on CUDA only
    encoder: Optional[DVAEEncoder] = None     # the dVAE encoder: init images and edits start from its tokens


def load_models(clip_model: str = weights.DEFAULT_CLIP, decoder: str = weights.DEFAULT_DECODER,
                device: Union[str, torch.device] = "auto", offline: bool = False,
                precision: Union[str, torch.dtype, None] = "auto") -> Models:
    """Resolve (download if needed), verify and load CLIP and the dVAE decoder onto ``device``.

    ``clip_model``: a name or path, or several separated by commas ("ViT-B/32,ViT-B/16"), which
    then guide together (``ClipEnsemble``).
    ``precision``: 'auto' (float16 on CUDA, float32 elsewhere), 'float32', 'float16' or
    'bfloat16': the dVAE decoder's weights and CLIP's autocast during generation."""
    target = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = precision if isinstance(precision, torch.dtype) or precision is None else resolve_precision(precision)
    clip_names = clip_model_names(clip_model)
    requested = {"decoder": decoder, **{f"clip{i}": name for i, name in enumerate(clip_names)}}
    sources = {key: weights.locate(name, "dvae" if key == "decoder" else "clip") for key, name in requested.items()}
    given = {key: source for key, source in sources.items() if isinstance(source, Path)}
    modules = {key: _load_module(key, path) for key, path in given.items()}   # a bad file stops us before downloads
    paths = {**given, **weights.fetch_all({k: s for k, s in sources.items() if k not in given}, offline=offline)}
    modules.update({key: _load_module(key, path) for key, path in paths.items() if key not in modules})
    names = {key: str(source) if key in given else source.name for key, source in sources.items()}
    dvae = DVAEDecoder(modules["decoder"]).set_precision(dtype).to(target)
    clip, clip_info = _guide([(modules[f"clip{i}"], names[f"clip{i}"], paths[f"clip{i}"])
                              for i in range(len(clip_names))], target)
    info = {
        "clip": clip_info,
        "decoder": {"name": names["decoder"], "path": str(paths["decoder"]), "vocab_size": dvae.vocab_size,
                    "upsample_factor": dvae.upsample_factor,
                    "dtype": str(dvae.compute_dtype).removeprefix("torch.")},
    }
    return Models(clip=clip, decoder=dvae, device=target, info=info, precision=dtype)


def _guide(loaded: Sequence[Tuple[nn.Module, str, Path]], device: torch.device
           ) -> Tuple[Union[ClipModel, ClipEnsemble], dict]:
    """(module, name, path) of each CLIP -> the one CLIP, or their ensemble, and its run.json entry."""
    members = [ClipModel(module).to(device) for module, _, _ in loaded]
    described = [{"name": name, "path": str(path), "input_resolution": clip.input_resolution}
                 for clip, (_, name, path) in zip(members, loaded)]
    if len(members) == 1:
        return members[0], described[0]
    ensemble = ClipEnsemble(members)
    return ensemble, {"name": ",".join(d["name"] for d in described), "members": described,
                      "input_resolution": ensemble.input_resolution}


def _load_module(kind: str, path: Path) -> nn.Module:
    """The decoder or CLIP module in ``path``, verified as it is loaded."""
    return weights.load_dvae_module(path, "decoder") if kind == "decoder" else weights.load_clip_module(path)


def load_clip(clip_model: str = weights.DEFAULT_CLIP, device: Union[str, torch.device] = "auto",
              offline: bool = False) -> Tuple[Union[ClipModel, ClipEnsemble], dict]:
    """CLIP alone (several, separated by commas, as one ``ClipEnsemble``), resolved and loaded as
    ``load_models`` does: what dalle-mini's reranking needs.

    Returns the model and its run.json description.
    """
    target = device if isinstance(device, torch.device) else resolve_device(device)
    sources = [weights.locate(name, "clip") for name in clip_model_names(clip_model)]   # every name, before downloads
    found = [weights.materialize(source, offline=offline) for source in sources]
    return _guide([(weights.load_clip_module(path), name, path) for path, name in found], target)


def load_encoder(encoder: str = weights.DEFAULT_ENCODER, device: Union[str, torch.device] = "auto",
                 offline: bool = False) -> Tuple[DVAEEncoder, dict]:
    """The dVAE encoder (a name or an encoder.pkl path), resolved, verified and loaded through the
    same allow-list as the decoder: what ``--init-image`` and ``clipdraw edit`` need.

    Returns the model and its run.json description. Set it as ``models.encoder``.
    """
    target = device if isinstance(device, torch.device) else resolve_device(device)
    path, name = weights.resolve(encoder, "encoder", offline=offline)
    module = DVAEEncoder(weights.load_dvae_module(path, "encoder")).to(target)
    return module, {"name": name, "path": str(path), "vocab_size": module.vocab_size}
