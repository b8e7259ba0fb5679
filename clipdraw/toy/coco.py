"""The toy transformer's training code on a real image-caption set in MS-COCO's captions format.

The seed documents trained their mini DALL-E on COCO's landscape pictures; this does the same:
captions filtered by keyword, images tokenised once by the real dVAE encoder (and cached, since
that is the slow part), then the same loop as the toy world (``train.fit_transformer``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..captions import images_folder, read_coco_file
from ..errors import ClipdrawError
from ..errors import note as note_on_stderr   # 'note' is read_coco_captions' parameter
from ..io import atomic_path, atomic_write_json, center_square, load_image
from ..progress import progress_bar
from .models import GPT_CONFIG, WordTokenizer, save_weights
from .train import TrainConfig, fit_transformer, map_pixels

COCO_TEXT_LEN = 32          # COCO captions run longer than the toy's (a few exceed this; they are cut)
CACHE_FORMAT = 1            # bump when the cached tokens' meaning changes
Pair = Tuple[Path, str]


# --------------------------------------------------------------------------- captions


def caption_words(caption: str) -> List[str]:
    """Lower-case words without punctuation, so 'Beach.' and 'beach' are one token."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", caption.lower())


def keyword_pattern(keywords: Iterable[str]) -> Optional["re.Pattern[str]"]:
    """Whole-word, case-insensitive match of any keyword ('sea' does not match 'seat')."""
    words = [k.strip() for k in keywords if k and k.strip()]
    if not words:
        return None
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)


def read_coco_captions(path: Union[str, Path], images_dir: Union[str, Path],
                       keywords: Optional[Sequence[str]] = None,
                       note: Optional[Callable[[str], None]] = None) -> List[Pair]:
    """(image path, caption) pairs from a COCO captions JSON, in annotation order.

    Only captions containing one of ``keywords`` (whole words, any case) are kept. Captions
    whose image is not listed or not on disk are skipped with a count (to ``note``, else stderr),
    so a partial download still trains; an error comes only when nothing is left.
    """
    path = Path(path).expanduser()
    coco = read_coco_file(path)
    images_dir = images_folder(images_dir)
    pattern = keyword_pattern(keywords or ())
    pairs: List[Pair] = []
    matched, unlisted, missing = 0, 0, 0
    exists: Dict[str, bool] = {}
    for image_id, caption in coco.captions:
        if pattern is not None and not pattern.search(caption):
            continue
        matched += 1
        name = coco.files.get(image_id)
        if name is None:
            unlisted += 1
            continue
        if name not in exists:
            exists[name] = (images_dir / name).is_file()
        if not exists[name]:
            missing += 1
            continue
        pairs.append((images_dir / name, caption))

    if not matched:
        wanted = f" containing any of: {', '.join(keywords)}" if pattern is not None else ""
        raise ClipdrawError(f"no caption in {path}{wanted}")
    if not pairs:
        raise ClipdrawError(f"none of the {matched} matching captions has its image in {images_dir} "
                            f"({missing} image file(s) missing, {unlisted} caption(s) for unlisted images)")
    if missing or unlisted:
        message = (f"skipped {missing + unlisted} of {matched} captions: {missing} with the image file "
                   f"missing from {images_dir}, {unlisted} for images not listed in {path.name}")
        (note or note_on_stderr)(message)
    return pairs


# --------------------------------------------------------------------------- image tokens


def load_pixels(path: Path, size: int) -> torch.Tensor:
    """RGB, shorter side resized to ``size``, centre crop: (3, size, size) floats in [0, 1]."""
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    image = center_square(load_image(path), size, Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


def _state_digest(module: nn.Module) -> str:
    """Identity of an encoder given without its file: a hash of its weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(images: Sequence[Path], size: int, encoder_key: str) -> str:
    """Changes when the encoder, the pixel size, the image list or any image file changes."""
    digest = hashlib.sha256(f"clipdraw-coco-tokens {CACHE_FORMAT} {encoder_key} {size}\n".encode())
    for image in images:
        stat = image.stat()
        digest.update(f"{image.resolve()}\0{stat.st_mtime_ns}\0{stat.st_size}\n".encode())
    return digest.hexdigest()


def _save_codes(path: Path, codes: torch.Tensor, metadata: dict) -> None:
    from safetensors.torch import save_file  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"codes": codes.contiguous()}, str(tmp), metadata={"clipdraw": json.dumps(metadata)})


def _load_cached(path: Path, rows: int) -> Optional[torch.Tensor]:
    """The cached codes, or None when the file is absent, unreadable or the wrong size."""
    from safetensors.torch import load_file  # noqa: PLC0415

    if not path.is_file():
        return None
    try:
        codes = load_file(str(path))["codes"]
    except Exception:   # a damaged cache is just recomputed
        return None
    return codes.long() if codes.dim() == 2 and codes.shape[0] == rows else None


def tokenize_images(pairs: Sequence[Pair], encoder: nn.Module, size: int = 256, cache_dir: Optional[Path] = None,
                    device: Union[str, torch.device] = "cpu", batch: int = 32, encoder_key: Optional[str] = None,
                    progress: bool = False) -> torch.LongTensor:
    """dVAE tokens (N, g*g) of each pair's image, g = size / the encoder's downsampling.

    Each distinct image is encoded once; the result is cached under ``cache_dir`` (when given)
    keyed by the encoder (``encoder_key``, else a hash of its weights), ``size`` and every
    image's path, mtime and byte size, so a second run skips the encoder entirely.
    """
    if size < 8 or size % 8:
        raise ClipdrawError(f"image size must be a positive multiple of 8, got {size}")
    images = list(dict.fromkeys(p for p, _ in pairs))
    if not images:
        raise ClipdrawError("no images to tokenise")
    where = {image: i for i, image in enumerate(images)}
    index = torch.tensor([where[p] for p, _ in pairs], dtype=torch.long)
    cache_file = None
    if cache_dir is not None:
        key = cache_key(images, size, encoder_key or _state_digest(encoder))
        cache_file = Path(cache_dir) / f"coco-tokens-{key[:24]}.safetensors"
        cached = _load_cached(cache_file, len(images))
        if cached is not None:
            return cached[index]

    encoder = encoder.to(device).eval()
    codes = []
    with torch.no_grad():
        for start in progress_bar(range(0, len(images), batch), desc="tokenise images", unit="batch", disable=not progress):
            pixels = torch.stack([load_pixels(p, size) for p in images[start:start + batch]])
            logits = encoder(map_pixels(pixels).to(device))
            codes.append(logits.argmax(1).flatten(1).cpu())
    codes = torch.cat(codes)
    if cache_file is not None:
        small = torch.int16 if int(codes.max()) < 2**15 else torch.int32
        _save_codes(cache_file, codes.to(small), {"size": size, "images": len(images), "format": CACHE_FORMAT})
    return codes[index]


# --------------------------------------------------------------------------- training


def train_coco(captions_json: Union[str, Path], images_dir: Union[str, Path], keywords: Optional[Sequence[str]],
               encoder_name_or_path: str = "openai", out: Union[str, Path] = "coco-transformer",
               config: Optional[TrainConfig] = None, device: Union[str, torch.device] = "auto",
               progress: bool = True, size: int = 256, offline: bool = False, cache_dir: Optional[Path] = None,
               batch: int = 32, log_fn: Optional[Callable[[str], None]] = None) -> dict:
    """Train the mini transformer over the real dVAE's tokens of a COCO-format caption set.

    Writes ``transformer.safetensors`` (with words, image_vocab, image_tokens and the GPT's shape
    in its metadata, source "coco") and ``train_log.json`` into ``out``; returns the summary.
    """
    from ..device import resolve_device  # noqa: PLC0415
    from ..weights import cache_dir as user_cache_dir  # noqa: PLC0415
    from ..weights import ENCODER_NAMES, file_sha256, load_dvae_module, locate, materialize  # noqa: PLC0415

    config = config or TrainConfig()
    out = Path(out).expanduser()
    if size < 8 or size % 8:
        raise ClipdrawError(f"--size must be a positive multiple of 8, got {size}")
    keywords = [k.strip() for k in (keywords or ()) if k and k.strip()]
    # Every cheap check before any download; notes wait until nothing more can fail early.
    # "openai" names the encoder here as in generate's --encoder; "openai-encoder", its file's name, too
    source = locate(encoder_name_or_path, "encoder" if encoder_name_or_path in ENCODER_NAMES else "dvae")
    target = device if isinstance(device, torch.device) else resolve_device(device)
    notes: List[str] = []
    pairs = read_coco_captions(captions_json, images_dir, keywords, note=notes.append)
    say = log_fn or (lambda message: None)

    start = time.perf_counter()
    path, description = materialize(source, offline=offline)
    encoder = load_dvae_module(path, "encoder")
    for message in notes:
        note_on_stderr(message)
    image_vocab = int(encoder.vocab_size)
    say(f"{len(pairs)} captions of {len({p for p, _ in pairs})} images; encoder {description} on {target}")
    codes = tokenize_images(pairs, encoder, size, cache_dir or user_cache_dir() / "coco-tokens", target, batch,
                            encoder_key=file_sha256(path), progress=progress)
    del encoder
    if target.type == "cuda":
        torch.cuda.empty_cache()
    seconds = {"tokenise": time.perf_counter() - start}

    start = time.perf_counter()
    captions = [" ".join(caption_words(c)) for _, c in pairs]
    tokenizer = WordTokenizer(sorted({w for c in captions for w in c.split()}), COCO_TEXT_LEN)
    texts = tokenizer.encode(captions)
    gpt_config = {**GPT_CONFIG, "text_len": COCO_TEXT_LEN, "image_tokens": int(codes.shape[1])}
    log: list = []
    flush = torch.set_flush_denormal(True)   # as for the toy: denormal gradients are slow on CPU
    try:
        model = fit_transformer(texts, codes, len(tokenizer), image_vocab, gpt_config, config, log, progress,
                                device=target)
    finally:
        if flush:
            torch.set_flush_denormal(False)
    meta = {"train_config": asdict(config), "source": "coco", "words": tokenizer.words, "image_vocab": image_vocab,
            "image_tokens": gpt_config["image_tokens"], "text_len": COCO_TEXT_LEN, "gpt_config": gpt_config,
            "encoder": description, "size": size, "keywords": keywords, "captions": len(pairs),
            "images": len({p for p, _ in pairs})}
    save_weights(out / "transformer.safetensors", model.state_dict(), meta)
    seconds["transformer"] = time.perf_counter() - start
    summary = {"seconds": seconds, "log": log, "config": asdict(config),
               **{k: meta[k] for k in ("source", "encoder", "size", "keywords", "captions", "images",
                                       "image_vocab", "image_tokens")}}
    atomic_write_json(out / "train_log.json", summary, indent=1)
    return summary
