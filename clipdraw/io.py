"""Files in and out, the one way clipdraw does it.

Writes go to a temporary name beside the target and are renamed over it only when whole, so
an interrupted run, a full disk or Ctrl-C never leaves half a file under a real name; the
renamed file gets a normal file's mode (the umask's), not mkstemp's owner-only one. Reads of
user-named files (JSON, text, images) fail in one ``ClipdrawError`` line saying which file
and why. No torch here: the CLI's cheap checks use it before torch is loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Tuple, Union

from .errors import ClipdrawError

if TYPE_CHECKING:
    from PIL import Image

PathLike = Union[str, "os.PathLike[str]"]
TEMP_SUFFIX = ".part"   # what a temporary file's name ends with (so leftovers are easy to find)


# --------------------------------------------------------------------------- writing


def default_file_mode() -> int:
    """The mode open() would give a new file (0o666 less the umask); mkstemp's 0o600 would hide
    images, reports and weights from the user's other accounts and tools."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temp_file_beside(path: Path, suffix: str = TEMP_SUFFIX) -> Tuple[int, str]:
    """(fd, name) of a new temporary file in ``path``'s folder, with a normal file's mode.

    Beside the target, so the final rename stays on one file system and is atomic."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    with contextlib.suppress(OSError):
        os.fchmod(fd, default_file_mode())
    return fd, tmp


@contextlib.contextmanager
def atomic_path(path: PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that want a file name (torch.save,
    safetensors' save_file, PIL, imageio); renamed over ``path`` when the block ends without
    error, removed when it does not.

    ``keep_suffix``: the temporary name ends in ``path``'s suffix too, for writers that choose
    the format by it (imageio). An OSError about the temporary file, or about no file at all (a
    failed ``write`` deep in a library), is re-labelled as about ``path``, the name the user knows.
    """
    path = Path(path)
    tmp: Optional[str] = None
    try:
        fd, tmp = temp_file_beside(path, TEMP_SUFFIX + (path.suffix if keep_suffix else ""))
        os.close(fd)
        yield Path(tmp)
        with contextlib.suppress(OSError):
            os.chmod(tmp, default_file_mode())   # some writers (safetensors) re-create it owner-only
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(e, OSError) and (tmp is None or e.filename is None or str(e.filename) == tmp):
            e.filename, e.filename2 = str(path), None
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """``data`` as the whole of ``path`` (see ``atomic_path``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """``text`` as UTF-8, whatever the locale's encoding."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, data: Any, **options: Any) -> None:
    """``data`` as JSON; ``options`` go to ``json.dumps`` (indent, default, allow_nan...)."""
    atomic_write_text(path, json.dumps(data, **options))


# --------------------------------------------------------------------------- reading


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of the ``what`` (e.g. 'prompt file') at ``path``, or one line saying why not."""
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


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON of a user-named file, or one line naming the line that is wrong."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ClipdrawError(f"{what} {path} is not valid JSON (line {e.lineno}: {e.msg})") from None


def load_image(path: PathLike, role: str = "image") -> "Image.Image":
    """An RGB image from disk, turned upright by its EXIF orientation (as a camera or a phone
    saved it), fully read (the file is closed), or one line naming ``role`` and saying why not."""
    from PIL import Image, ImageOps, UnidentifiedImageError  # noqa: PLC0415

    path = Path(path).expanduser()
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image)
            upright.load()
    except FileNotFoundError:
        raise ClipdrawError(f"{role} {path} does not exist") from None
    except IsADirectoryError:
        raise ClipdrawError(f"{role} {path} is a folder, not an image") from None
    except UnidentifiedImageError:
        raise ClipdrawError(f"cannot read {role} {path}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ClipdrawError(f"cannot read {role} {path}: {e}") from None
    if upright.width == 0 or upright.height == 0:
        raise ClipdrawError(f"{role} {path} has no pixels")
    return upright.convert("RGB")


def center_square(image: "Image.Image", size: int, resample: int) -> "Image.Image":
    """Shorter side resized to ``size``, then the centre ``size`` x ``size`` crop: how CLIP
    and the dVAE encoder see a picture of any shape."""
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    resized = image.resize((width, height), resample)
    left, top = (width - size) // 2, (height - size) // 2
    return resized.crop((left, top, left + size, top + size))
