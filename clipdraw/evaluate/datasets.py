"""Prompt sets for experiments: plain prompt files, MS-COCO captions and Flickr30k (Karpathy's split).

Each reader returns ``Item``s: one prompt to draw, with its gold image and every reference
caption when the set has them. The seed documents drew one caption per image (the first) and
compared the drawings with the image itself, so that is what an item is for COCO and Flickr30k.

Wrong files are refused in one line that says what was expected; a missing images folder is
refused before anything runs; single missing image files are skipped with a count, so a
partial download still runs.

Formats:

- prompt file: one prompt per line, lines starting with ``#`` are comments; a line ``[name]`` starts a group
  (the prefix study's "bare", "a picture of", ... are groups), summarised apart in reports;
- COCO captions (captions_val2017.json): ``{"images": [{"id", "file_name"}, ...],
  "annotations": [{"image_id", "caption"}, ...]}``;
- Karpathy's Flickr30k (dataset_flickr30k.json): ``{"images": [{"filename", "split",
  "sentences": [{"raw"}, ...]}, ...]}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from ..errors import ClipdrawError
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


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ClipdrawError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ClipdrawError(f"{what} {path} is a folder, not a file") from None
    except OSError as e:
        raise ClipdrawError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ClipdrawError(f"{what} {path} is not UTF-8 text") from None


def _read_json(path: Path, what: str):
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ClipdrawError(f"{what} {path} is not valid JSON (line {e.lineno}: {e.msg})") from None


def _unique_ids(items: List[Item]) -> List[Item]:
    """Make ids unique by suffixing -2, -3, ... (the same prompt twice is two items)."""
    for item, name in zip(items, unique_names(item.id for item in items)):
        item.id = name
    return items


def _is_id(value: object) -> bool:
    """A dataset id is a number or a string (the folder name is made safe by ``safe_name``)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def read_lines(path: PathLike, what: str = "list") -> List[Tuple[str, str]]:
    """(group, line) for each non-empty, non-comment line; ``[name]`` lines set the group."""
    path = Path(path).expanduser()
    group, lines = "", []
    for raw in _read_text(path, what).splitlines():
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


def _check_images_dir(images_dir: PathLike) -> Path:
    folder = Path(images_dir).expanduser()
    if not folder.is_dir():
        raise ClipdrawError(f"images folder {folder} does not exist or is not a folder")
    return folder


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
    document = _read_json(path, "COCO captions file")
    folder = _check_images_dir(images_dir)

    def wrong(what: str) -> ClipdrawError:
        return ClipdrawError(f"{path} is not a COCO captions file: {what}")

    if not isinstance(document, dict):
        raise wrong(f"expected an object with 'images' and 'annotations', got a {type(document).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(document.get(key), list):
            raise wrong(f"'{key}' is missing or not a list")
    files: Dict[object, str] = {}
    for n, image in enumerate(document["images"]):
        if not isinstance(image, dict) or not _is_id(image.get("id")) or not isinstance(image.get("file_name"), str):
            raise wrong(f"images[{n}] lacks 'id' or a string 'file_name'")
        files[image["id"]] = image["file_name"]
    captions_of: Dict[object, List[str]] = {}
    for n, note_ in enumerate(document["annotations"]):
        if not isinstance(note_, dict) or not _is_id(note_.get("image_id")) or not isinstance(note_.get("caption"), str):
            raise wrong(f"annotations[{n}] lacks 'image_id' or a string 'caption'")
        caption = " ".join(note_["caption"].split())
        if caption and note_["image_id"] in files:
            captions_of.setdefault(note_["image_id"], []).append(caption)
    if not captions_of:
        raise ClipdrawError(f"no caption in {path} belongs to an image it lists")
    # the id names run folders: safe_name keeps "coco-139" and turns "coco-x/../victim" into one plain name
    items = [Item(id=safe_name(f"coco-{image_id}"), prompt=texts[0], gold=folder / files[image_id], references=texts)
             for image_id, texts in ((i, captions_of[i]) for i in files if i in captions_of)]
    return _keep_present(_unique_ids(items), folder, path, limit, note)


def read_flickr(dataset: PathLike, images_dir: PathLike, split: Optional[str] = "test", limit: Optional[int] = None,
                note: Optional[Callable[[str], None]] = None) -> List[Item]:
    """One item per Flickr30k image of ``split`` (None: all) from Karpathy's
    dataset_flickr30k.json: its first sentence as the prompt, all five as references."""
    path = Path(dataset).expanduser()
    document = _read_json(path, "Flickr30k file")
    folder = _check_images_dir(images_dir)

    def wrong(what: str) -> ClipdrawError:
        return ClipdrawError(f"{path} is not Karpathy's Flickr30k file (dataset_flickr30k.json): {what}")

    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise wrong("expected an object with an 'images' list")
    items, splits = [], set()
    for n, image in enumerate(document["images"]):
        if not isinstance(image, dict) or not isinstance(image.get("filename"), str) \
                or not isinstance(image.get("sentences"), list):
            raise wrong(f"images[{n}] lacks a string 'filename' or a 'sentences' list")
        splits.add(image.get("split"))
        if split is not None and image.get("split") != split:
            continue
        texts = []
        for m, sentence in enumerate(image["sentences"]):
            if not isinstance(sentence, dict) or not isinstance(sentence.get("raw"), str):
                raise wrong(f"images[{n}].sentences[{m}] lacks a string 'raw'")
            if sentence["raw"].strip():
                texts.append(" ".join(sentence["raw"].split()))
        if texts:
            items.append(Item(id=safe_name(f"flickr-{Path(image['filename']).stem}"), prompt=texts[0],
                              gold=folder / image["filename"], references=texts))
    if not items:
        known = ", ".join(sorted(str(s) for s in splits if s is not None)) or "none"
        raise ClipdrawError(f"no captioned image in {path} for split {split!r} (splits present: {known})")
    return _keep_present(_unique_ids(items), folder, path, limit, note)
