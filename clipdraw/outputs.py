"""Writing a run to disk: ``<out>/<prompt-slug>-<seed>[-N]/`` with frames, final.png,
progress.gif (optionally .mp4) and run.json. Every file is written to a temporary name and
renamed when whole, so an interrupted run leaves only complete files."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import platform
import re
import struct
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

import numpy as np
from PIL import Image, PngImagePlugin

from . import __version__
from .errors import ClipdrawError
from .io import atomic_path, atomic_write_bytes
from .results import Frame, Result

PACKAGES = ("torch", "torchvision", "clip-anytorch", "DALL-E", "kornia", "numpy", "pillow", "imageio", "min-dalle")


def slugify(text: str, max_length: int = 60) -> str:
    """'A photo of Albert Einstein!' -> 'a-photo-of-albert-einstein'."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_length].rstrip("-") or "prompt"


SAFE_NAME = re.compile(r"[A-Za-z0-9_-](?:[A-Za-z0-9._-]*[A-Za-z0-9_-])?")   # no '.', '..', hidden or 'a.' names


def safe_name(text: object, max_length: int = 80) -> str:
    """One folder name made from user data (a dataset's image id, ...), never a path.

    ``text`` itself when it is already a plain name (letters, digits, ``.``, ``_``, ``-``;
    not starting or ending with ``.``; at most ``max_length``), so ``coco-139`` stays
    ``coco-139``; otherwise its slug plus 12 hex digits of its SHA-256, so ``x/../victim``
    becomes ``x-victim-<hash>`` and two distinct texts do not end up in one folder."""
    text = str(text)
    if len(text) <= max_length and SAFE_NAME.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{slugify(text, max(1, max_length - 13))}-{digest}"


def unique_names(names: Iterable[str]) -> List[str]:
    """The names with repeats made distinct by ``-2``, ``-3``, ...: each name's first
    occurrence keeps it, and a suffixed name never takes one that appears in the list."""
    names = list(names)
    taken, result = set(names), []
    used = set()
    for name in names:
        if name in used:
            n = 2
            while f"{name}-{n}" in taken or f"{name}-{n}" in used:
                n += 1
            name = f"{name}-{n}"
        used.add(name)
        result.append(name)
    return result


def check_output_root(out: Path) -> None:
    """Fail early, creating nothing, when ``out`` cannot hold a run folder."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ClipdrawError(f"cannot write outputs under {out}: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ClipdrawError(f"cannot write outputs under {out}: {probe} is not writable ({e.strerror or e})") from None


def make_run_dir(out: Path, prompt: str, seed: int) -> Path:
    """Create a fresh folder for this run; never reuse one (adds -2, -3, ... instead)."""
    base = f"{slugify(prompt)}-{seed}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            path = out / (base if n == 1 else f"{base}-{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as e:
        raise ClipdrawError(f"cannot create a run folder under {out}: {e.strerror or e}") from None
    raise ClipdrawError(f"too many runs named {base} under {out}")


def package_versions() -> Dict[str, Optional[str]]:
    versions: Dict[str, Optional[str]] = {"python": platform.python_version(), "clipdraw": __version__}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def png_bytes(image: Image.Image, text: Dict[str, str]) -> bytes:
    """PNG with ``text`` as tEXt/iTXt chunks (prompt, seed, settings...)."""
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def frame_pixels(frame: Union[np.ndarray, str, os.PathLike]) -> np.ndarray:
    """An (H, W, 3) uint8 array: ``frame`` itself, or read from the image file it names."""
    if isinstance(frame, np.ndarray):
        return frame
    with Image.open(frame) as image:
        return np.asarray(image.convert("RGB"))


class StreamingGif:
    """An animated GIF written one frame at a time, nothing kept but the file: each frame is
    encoded by Pillow as a GIF of its own (its palette as Pillow's GIF writer makes it for that
    frame) and its image block appended with that palette as a local colour table.

    (imageio's GIF writers do not stream: its pillow plugin holds every frame until closed, and
    Pillow's own multi-frame writer does too; the legacy streaming one writes a corrupt header for
    images of few colours.)"""

    def __init__(self, path: Path, fps: float, loop: int = 0):
        self.file = open(path, "wb")   # noqa: SIM115 (closed by close())
        self.delay = max(1, round(100 / fps))   # hundredths of a second
        self.loop, self.count = loop, 0

    def append_data(self, frame: np.ndarray) -> None:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="GIF")
        width, height, table, interlace, data = _gif_image_block(buffer.getvalue())
        if self.count == 0:   # header: the screen, no global colour table, loop forever
            self.file.write(b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0))
            self.file.write(b"\x21\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", self.loop) + b"\x00")
        size_bits = max(len(table) // 3 - 1, 1).bit_length() - 1
        self.file.write(b"\x21\xf9\x04" + struct.pack("<BHBB", 0x04, self.delay, 0, 0))   # keep the frame; delay
        self.file.write(b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0x80 | interlace | size_bits))
        self.file.write(table.ljust(3 << (size_bits + 1), b"\x00"))
        self.file.write(data)
        self.count += 1

    def close(self) -> None:
        if not self.file.closed:
            try:
                self.file.write(b"\x3b")
            finally:
                self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        if kind is None:
            self.close()
        else:   # failed (a full disk...): the file is discarded, its close must not hide why
            with contextlib.suppress(OSError):
                self.file.close()


def _gif_image_block(gif: bytes):
    """(width, height, colour table, interlace flag, LZW data with its sub-blocks) of the first
    image of a GIF file."""
    width, height, flags = struct.unpack_from("<HHB", gif, 6)
    position, table = 13, b""
    if flags & 0x80:
        size = 3 << ((flags & 7) + 1)
        table, position = gif[position:position + size], position + size
    while gif[position] == 0x21:   # extensions: skip their sub-blocks
        position += 2
        while gif[position]:
            position += gif[position] + 1
        position += 1
    if gif[position] != 0x2C:
        raise ValueError("no image in the GIF Pillow wrote")
    descriptor_flags = gif[position + 9]
    position += 10
    if descriptor_flags & 0x80:
        size = 3 << ((descriptor_flags & 7) + 1)
        table, position = gif[position:position + size], position + size
    start = position
    position += 1   # the LZW minimum code size
    while gif[position]:
        position += gif[position] + 1
    return width, height, table, descriptor_flags & 0x40, gif[start:position + 1]


def _animation_writer(tmp: Path, fps: float):
    if tmp.suffix == ".gif":
        return StreamingGif(tmp, fps)
    import imageio.v2 as imageio  # noqa: PLC0415

    return imageio.get_writer(tmp, fps=fps, codec="libx264", quality=8, macro_block_size=8)


def write_animation(path: Path, frames: Iterable[Union[np.ndarray, str, os.PathLike]], fps: float) -> None:
    """GIF (``StreamingGif``) or MP4 (imageio) by suffix, written under a temporary name then renamed.

    ``frames`` (arrays, or image files read one at a time) are streamed: one frame in memory
    at a time, however many there are."""
    with atomic_path(path, keep_suffix=True) as tmp, _animation_writer(tmp, fps) as writer:
        for frame in frames:
            writer.append_data(frame_pixels(frame))


def mp4_available() -> bool:
    """imageio writes MP4 through the imageio-ffmpeg package (the ``mp4`` extra)."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


class RunWriter:
    """Streams frames of one run into its folder, then writes the final image, animation and run.json."""

    def __init__(self, run_dir: Path, prompt: str, settings: dict, info: dict,
                 gif: bool = True, mp4: bool = False, fps: float = 10.0, engine: str = "optimize"):
        self.run_dir, self.prompt, self.settings, self.info = run_dir, prompt, settings, info
        self.engine = engine
        self.gif, self.mp4, self.fps = gif, mp4, fps
        self.frame_files: List[dict] = []
        self.image_files: List[dict] = []
        self.finished = False

    def _png_text(self, frame: Frame) -> Dict[str, str]:
        return {"prompt": self.prompt, "seed": str(self.settings.get("seed")), "iteration": str(frame.iteration),
                "similarity": f"{frame.similarity:.6f}", "settings": json.dumps(self.settings, sort_keys=True),
                **({"judge_score": f"{frame.judge_score:.6f}"} if frame.judge_score is not None else {}),
                "Software": f"clipdraw {__version__}"}

    def add_frame(self, frame: Frame) -> None:
        name = f"frame_{frame.iteration:06d}.png"
        atomic_write_bytes(self.run_dir / name, png_bytes(frame.image, self._png_text(frame)))
        self.frame_files.append({"iteration": frame.iteration, "file": name, "similarity": frame.similarity,
                                 **({"judge_score": frame.judge_score} if frame.judge_score is not None else {}),
                                 **({"scores": frame.scores} if frame.scores else {}),
                                 **({"prompt": frame.prompt} if frame.prompt is not None else {})})

    def add_image(self, name: str, image: Image.Image, similarity: float, iteration: int, **fields) -> None:
        """A result image beside final.png (dalle-mini's kept candidates), listed in run.json."""
        text = {**self._png_text(Frame(iteration, image, similarity)), **{k: str(v) for k, v in fields.items()}}
        atomic_write_bytes(self.run_dir / name, png_bytes(image, text))
        self.image_files.append({"file": name, "similarity": similarity, **fields})

    @contextlib.contextmanager
    def on_failure(self):
        """Around a run: if it fails (disk full, out of memory, ...), leave a run.json that says
        so and lists the frames written, so that no one takes the folder for a finished run."""
        try:
            yield self
        except Exception as e:
            if self.finished:   # a batch's other run failed after this one was written whole
                raise
            record = {"clipdraw": __version__, "prompt": self.prompt, "settings": self.settings, "engine": self.engine,
                      "status": "error", "error": f"{type(e).__name__}: {e}".splitlines()[0][:500],
                      "frames": self.frame_files}
            with contextlib.suppress(OSError):   # the disk may be what failed: the error itself still reaches the user
                atomic_write_bytes(self.run_dir / "run.json", json.dumps(record, indent=2, default=str).encode())
            raise

    def finish(self, result: Result, extra: Optional[dict] = None) -> Dict[str, Path]:
        """Write final.png (the result's chosen frame: the judge's best when a judge scored the
        frames, else the last), the result's kept images (best first: image_01.png, ...), the
        animations and run.json (``result.summary()`` and what this writer knows)."""
        written = {}
        chosen = result.chosen_frame
        final = Frame(chosen.iteration, result.image, result.final_similarity, chosen.judge_score, chosen.scores,
                      chosen.prompt)
        atomic_write_bytes(self.run_dir / "final.png", png_bytes(result.image, self._png_text(final)))
        for rank, (image, score) in enumerate(result.kept_images(), 1):
            self.add_image(f"image_{rank:02d}.png", image, score, final.iteration, rank=rank)
        written["final"] = self.run_dir / "final.png"
        frames = [self.run_dir / f["file"] for f in self.frame_files]   # read back one at a time
        if self.gif and frames:
            write_animation(self.run_dir / "progress.gif", frames, self.fps)
            written["gif"] = self.run_dir / "progress.gif"
        if self.mp4 and frames:
            write_animation(self.run_dir / "progress.mp4", frames, self.fps)
            written["mp4"] = self.run_dir / "progress.mp4"
        record = {
            "clipdraw": __version__,
            **result.summary(),
            "engine": self.engine,
            "models": self.info.get("models"),
            "device": self.info.get("device"),
            "versions": package_versions(),
            "frames": self.frame_files,
            **({"images": self.image_files} if self.image_files else {}),
            "final": {"file": "final.png", "iteration": final.iteration, "similarity": final.similarity,
                      **({"judge_score": final.judge_score, "chosen_by": "judge"} if final.judge_score is not None
                         else {}),
                      **({"scores": final.scores} if final.scores else {})},
            "last": self.frame_files[-1] if self.frame_files else None,
            "animations": {k: p.name for k, p in written.items() if k in ("gif", "mp4")},
            **(extra or {}),
        }
        atomic_write_bytes(self.run_dir / "run.json",
                           json.dumps(record, indent=2, default=str, allow_nan=True).encode())
        written["json"] = self.run_dir / "run.json"
        self.finished = True
        return written
