"""The caption sets clipdraw reads, parsed and checked once for every user of them: the
evaluation commands (``clipdraw.evaluate.datasets``) and the toy transformer's COCO training
(``clipdraw.toy.coco``).

Formats:

- COCO captions (captions_val2017.json): ``{"images": [{"id", "file_name"}, ...],
  "annotations": [{"image_id", "caption"}, ...]}``;
- Karpathy's Flickr30k (dataset_flickr30k.json): ``{"images": [{"filename", "split",
  "sentences": [{"raw"}, ...]}, ...]}``.

A file of another shape is refused in one line that names the first wrong entry. Ids must be
numbers or strings (they name run folders, made safe by ``clipdraw.outputs.safe_name``), and
captions come with their whitespace collapsed, empty ones dropped. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple, Union

from .errors import ClipdrawError
from .io import read_json

ImageId = Union[int, str]
COCO_WHAT = "COCO captions file"
FLICKR_WHAT = "Flickr30k file"


@dataclass
class CocoCaptions:
    """A COCO captions file's content: which file each image is, and every caption in order."""

    files: Dict[ImageId, str]                   # image id -> file name, in the file's order
    captions: List[Tuple[ImageId, str]]         # (image id, caption), in annotation order


@dataclass
class FlickrImage:
    """One image of Karpathy's Flickr30k file."""

    filename: str
    split: Optional[str]
    captions: List[str] = field(default_factory=list)


def is_id(value: object) -> bool:
    """A dataset id is a number or a string (not a bool, a list, ...)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def clean_caption(text: str) -> str:
    """Whitespace collapsed to single spaces: 'A  cat\\n' and 'A cat' are one caption."""
    return " ".join(text.split())


def images_folder(images_dir: Union[str, Path]) -> Path:
    """The images folder, refused before anything runs when it is not one."""
    folder = Path(images_dir).expanduser()
    if not folder.is_dir():
        raise ClipdrawError(f"images folder {folder} does not exist or is not a folder")
    return folder


def read_coco_file(path: Path) -> CocoCaptions:
    """The images and captions of a COCO captions JSON, or one line saying what is wrong."""
    document = read_json(path, COCO_WHAT)

    def wrong(what: str) -> ClipdrawError:
        return ClipdrawError(f"{path} is not a COCO captions file: {what}")

    if not isinstance(document, dict):
        raise wrong(f"expected an object with 'images' and 'annotations', got a {type(document).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(document.get(key), list):
            raise wrong(f"'{key}' is missing or not a list")
    files: Dict[ImageId, str] = {}
    for n, image in enumerate(document["images"]):
        if not isinstance(image, dict) or not is_id(image.get("id")) or not isinstance(image.get("file_name"), str):
            raise wrong(f"images[{n}] lacks 'id' or a string 'file_name'")
        files[image["id"]] = image["file_name"]
    captions: List[Tuple[ImageId, str]] = []
    for n, entry in enumerate(document["annotations"]):
        if not isinstance(entry, dict) or not is_id(entry.get("image_id")) or not isinstance(entry.get("caption"), str):
            raise wrong(f"annotations[{n}] lacks 'image_id' or a string 'caption'")
        caption = clean_caption(entry["caption"])
        if caption:
            captions.append((entry["image_id"], caption))
    return CocoCaptions(files, captions)


def read_flickr_file(path: Path, split: Optional[str] = "test") -> Tuple[List[FlickrImage], Set[object]]:
    """The images of ``split`` (None: all) in Karpathy's dataset_flickr30k.json, each with its
    non-empty sentences, in order; and every split the file has (to say so when none matched)."""
    document = read_json(path, FLICKR_WHAT)

    def wrong(what: str) -> ClipdrawError:
        return ClipdrawError(f"{path} is not Karpathy's Flickr30k file (dataset_flickr30k.json): {what}")

    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise wrong("expected an object with an 'images' list")
    images, splits = [], set()
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
                texts.append(clean_caption(sentence["raw"]))
        images.append(FlickrImage(image["filename"], image.get("split"), texts))
    return images, splits
