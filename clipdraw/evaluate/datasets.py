"""Prompt sets for experiments: plain prompt files, MS-COCO captions and Flickr30k (Karpathy's split).

Each reader returns ``Item``s: one prompt to draw, with its gold image and every reference
caption when the set has them. The seed documents drew one caption per image (the first) and
compared the drawings with the image itself, so that is what an item is for COCO and Flickr30k.

Wrong files are refused in one line that says what was expected; a missing images folder is
refused before anything runs; single missing image files are skipped with a count, so a
partial download still runs.

A prompt file holds one prompt per line, lines starting with ``#`` are comments; a line
``[name]`` starts a group (the prefix study's "bare", "a picture of", ... are groups),
summarised apart in reports. The COCO and Flickr30k files are parsed and checked by
``clipdraw.captions``, which the toy world's COCO training shares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from ..captions import images_folder, read_coco_file, read_flickr_file
from ..errors import ClipdrawError
from ..io import read_text
from ..outputs import safe_name, slugify, unique_names

GROUP_LINE = re.compile(r"^\[(.+)\]$")
PathLike = Union[str, Path]


@dataclass
class Item:
    """One prompt of an experiment."""

    id: str                               # stable across re-runs: names the run folders (one plain name)
    prompt: str
    group: str = ""
    gold: Optional[Path] = None           # the dataset's own image for this caption
    references: List[str] = field(default_factory=list)   # every caption of the gold image


def _unique_ids(items: List[Item]) -> List[Item]:
    """Make ids unique by suffixing -2, -3, ... (the same prompt twice is two items)."""
    for item, name in zip(items, unique_names(item.id for item in items)):
        item.id = name
    return items


def read_lines(path: PathLike, what: str = "list") -> List[Tuple[str, str]]:
    """(group, line) for each non-empty, non-comment line; ``[name]`` lines set the group."""
    path = Path(path).expanduser()
    group, lines = "", []
    for raw in read_text(path, what).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = GROUP_LINE.match(line)
        if header:
            group = header.group(1).strip()
            continue
        lines.append((group, " ".join(line.split())))
    return lines


def read_prompt_file(path: PathLike, limit: Optional[int] = None) -> List[Item]:
    """Items from a prompt file (one prompt per line, optional ``[group]`` headers)."""
    lines = read_lines(path, "prompt file")
    if not lines:
        raise ClipdrawError(f"prompt file {path} holds no prompt (one per line; lines starting with # are comments)")
    items = [Item(id=slugify(prompt, 50), prompt=prompt, group=group) for group, prompt in lines]
    return _unique_ids(items)[:limit]


def _keep_present(items: List[Item], images_dir: Path, source: Path, limit: Optional[int],
                  note: Optional[Callable[[str], None]]) -> List[Item]:
    """Items whose gold image is on disk, up to ``limit``; a count of the skipped ones to ``note``."""
    kept, missing = [], 0
    for item in items:
        if limit is not None and len(kept) >= limit:
            break
        if item.gold is not None and item.gold.is_file():
            kept.append(item)
        else:
            missing += 1
    if not kept:
        raise ClipdrawError(f"none of the images listed in {source} is in {images_dir} "
                            f"({missing} missing): is --images the right folder?")
    if missing and note:
        note(f"skipped {missing} caption(s) whose image is not in {images_dir}")
    return kept


def read_coco(captions: PathLike, images_dir: PathLike, limit: Optional[int] = None,
              note: Optional[Callable[[str], None]] = None) -> List[Item]:
    """One item per COCO image (in the file's order of images that have captions): its first
    caption as the prompt, all its captions as references, the image as gold."""
    path = Path(captions).expanduser()
    coco = read_coco_file(path)
    folder = images_folder(images_dir)
    captions_of: Dict[object, List[str]] = {}
    for image_id, caption in coco.captions:
        if image_id in coco.files:
            captions_of.setdefault(image_id, []).append(caption)
    if not captions_of:
        raise ClipdrawError(f"no caption in {path} belongs to an image it lists")
    # the id names run folders: safe_name keeps "coco-139" and turns "coco-x/../victim" into one plain name
    items = [Item(id=safe_name(f"coco-{image_id}"), prompt=texts[0], gold=folder / coco.files[image_id],
                  references=texts)
             for image_id, texts in ((i, captions_of[i]) for i in coco.files if i in captions_of)]
    return _keep_present(_unique_ids(items), folder, path, limit, note)


def read_flickr(dataset: PathLike, images_dir: PathLike, split: Optional[str] = "test", limit: Optional[int] = None,
                note: Optional[Callable[[str], None]] = None) -> List[Item]:
    """One item per Flickr30k image of ``split`` (None: all) from Karpathy's
    dataset_flickr30k.json: its first sentence as the prompt, all five as references."""
    path = Path(dataset).expanduser()
    images, splits = read_flickr_file(path, split)
    folder = images_folder(images_dir)
    # as for COCO, safe_name makes the file's stem one plain folder name whatever it holds
    items = [Item(id=safe_name(f"flickr-{Path(image.filename).stem}"), prompt=image.captions[0],
                  gold=folder / image.filename, references=image.captions)
             for image in images if image.captions]
    if not items:
        known = ", ".join(sorted(str(s) for s in splits if s is not None)) or "none"
        raise ClipdrawError(f"no captioned image in {path} for split {split!r} (splits present: {known})")
    return _keep_present(_unique_ids(items), folder, path, limit, note)
