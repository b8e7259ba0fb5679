"""Every pretrained file clipdraw uses: where it comes from, where it is cached, how it is
downloaded, verified and safely loaded.

Names map to URLs; any existing file path is accepted wherever a name is. Downloads go to a
temporary file that is renamed only once complete and verified. CLIP's URLs carry their
SHA-256; for the dVAE files the hash is recorded at first download (``<file>.sha256``) and
checked on every later load.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import os
import pickle
import re
import sys
import types
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Dict, Optional, Tuple, Union

import torch
from torch import nn

from .config import DEFAULT_CLIP, DEFAULT_DECODER, DEFAULT_ENCODER  # noqa: F401 (the names resolved here)
from .errors import ClipdrawError, note
from .io import atomic_path, atomic_write_bytes
from .progress import progress_bar

DVAE_URLS = {
    "openai": "https://cdn.openai.com/dall-e/decoder.pkl",
    "openai-encoder": "https://cdn.openai.com/dall-e/encoder.pkl",
}
ENCODER_NAMES = {"openai": "openai-encoder"}   # --encoder NAME -> its DVAE_URLS entry
CHUNK = 1 << 20


def import_clip():
    """Import OpenAI's ``clip`` package, silencing its pkg_resources deprecation warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import clip  # noqa: PLC0415
    return clip


def clip_urls() -> dict:
    """CLIP model names -> URLs, as published in clip-anytorch."""
    return dict(import_clip().clip._MODELS)


def cache_dir() -> Path:
    """``$CLIPDRAW_CACHE``, else ``$XDG_CACHE_HOME/clipdraw``, else ``~/.cache/clipdraw``."""
    if os.environ.get("CLIPDRAW_CACHE"):
        return Path(os.environ["CLIPDRAW_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "clipdraw"


@dataclass(frozen=True)
class WeightFile:
    """One downloadable file: its public name, URL, place in the cache and known hash."""

    name: str
    url: str
    filename: str
    sha256: Optional[str] = None  # known in advance (CLIP); else recorded at first download
    kind: str = "weights"         # for messages: "CLIP model", "dVAE decoder", ...

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    @property
    def source_url(self) -> str:
        """The URL to fetch from: ``$CLIPDRAW_MIRROR/<filename>`` when a mirror is set."""
        mirror = os.environ.get("CLIPDRAW_MIRROR")
        return f"{mirror.rstrip('/')}/{self.filename}" if mirror else self.url

    def path(self, root: Optional[Path] = None) -> Path:
        return (root or cache_dir()) / self.filename


def clip_weight_file(name: str) -> WeightFile:
    urls = clip_urls()
    if name not in urls:
        raise ClipdrawError(f"unknown CLIP model {name!r}: expected one of {', '.join(urls)} or a path to a checkpoint")
    url = urls[name]
    return WeightFile(name=name, url=url, filename="clip-" + url.rsplit("/", 1)[-1], sha256=url.split("/")[-2],
                      kind="CLIP model")


def dvae_weight_file(name: str) -> WeightFile:
    if name not in DVAE_URLS:
        raise ClipdrawError(f"unknown dVAE {name!r}: expected one of {', '.join(DVAE_URLS)} or a path to a .pkl file")
    url = DVAE_URLS[name]
    kind = "dVAE encoder" if "encoder" in url else "dVAE decoder"
    return WeightFile(name=name, url=url, filename="dvae-" + url.rsplit("/", 1)[-1], kind=kind)


# --------------------------------------------------------------------------- hashing


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_record(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


# --------------------------------------------------------------------------- download


class DownloadError(ClipdrawError):
    """A transfer that failed; the message says why, the caller adds where to place the file."""


def download(url: str, dest: Path, sha256: Optional[str] = None, desc: Optional[str] = None,
             timeout: float = 60.0) -> str:
    """Fetch ``url`` into ``dest`` with a progress bar; return the file's SHA-256.

    The bytes go to a temporary file in the destination folder, renamed over ``dest`` only
    when the transfer is complete (Content-Length honoured) and the hash matches ``sha256``.
    On any failure, Ctrl-C included, nothing is left behind.
    """
    opened, made = False, not dest.parent.exists()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp, open(tmp, "wb") as out:
            opened = True
            return _receive(url, out, sha256, desc or dest.name, timeout)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise DownloadError(f"network error: {e.reason}") from None
    except ValueError as e:   # malformed URL, e.g. a mirror set without http://
        raise DownloadError(f"bad URL: {e}") from None
    except (http.client.HTTPException, OSError) as e:
        if not opened:
            raise DownloadError(f"cannot write to {dest.parent}: {e.strerror or e}") from None
        raise DownloadError(f"transfer failed: {type(e).__name__}: {e}") from None
    finally:
        if made and not dest.exists():   # failed: no empty cache folder either
            with contextlib.suppress(OSError):
                dest.parent.rmdir()


def _receive(url: str, out: BinaryIO, sha256: Optional[str], desc: str, timeout: float) -> str:
    """Stream ``url`` into ``out``; the SHA-256 of what came, once it is all there and as expected."""
    request = urllib.request.Request(url, headers={"User-Agent": "clipdraw"})
    digest, received = hashlib.sha256(), 0
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status = getattr(response, "status", None)
        if status is not None and status != 200:
            raise DownloadError(f"HTTP {status}")
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with progress_bar(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                  file=sys.stderr, leave=False, dynamic_ncols=True) as bar:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                out.write(block)
                digest.update(block)
                received += len(block)
                bar.update(len(block))
    if total is not None and received != total:
        raise DownloadError(f"transfer interrupted after {received} of {total} bytes")
    actual = digest.hexdigest()
    if sha256 and actual != sha256.lower():
        raise DownloadError(f"checksum mismatch: expected SHA-256 {sha256}, got {actual}")
    return actual


def fetch(weight: WeightFile, offline: bool = False, root: Optional[Path] = None) -> Path:
    """Return the cached path of ``weight``, downloading it first unless ``offline``.

    A cached file whose hash no longer matches (known hash, or the one recorded at download)
    is fetched again when online and refused when offline.
    """
    dest = weight.path(root)
    url = weight.source_url
    place_hint = f"download {url} and place it at {dest}"
    if dest.is_file():
        problem = _verify_cached(weight, dest)
        if problem is None:
            return dest
        if offline:
            raise ClipdrawError(f"cached {weight.label} at {dest} is damaged ({problem}); {place_hint}")
        note(f"cached {weight.label} is damaged ({problem}); downloading again")
    elif offline:
        raise ClipdrawError(f"--offline: {weight.label} is not in the cache; {place_hint}")
    try:
        digest = download(url, dest, sha256=weight.sha256, desc=weight.label)
    except DownloadError as e:
        raise ClipdrawError(f"cannot download {weight.label} from {url} ({e}); {place_hint} by hand") from None
    if weight.sha256 is None:
        atomic_write_bytes(_hash_record(dest), (digest + "\n").encode())
    return dest


def fetch_all(needed: Dict[str, WeightFile], offline: bool = False) -> Dict[str, Path]:
    """``fetch`` each file; when some cannot be had, one error naming every one of them (its URL
    and where it goes), so that a first run learns all it needs at once, and the way around."""
    paths, problems = {}, []
    for key, weight in needed.items():
        try:
            paths[key] = fetch(weight, offline=offline)
        except ClipdrawError as e:
            problems.append(str(e))
    if problems:
        raise ClipdrawError(f"{'; '.join(problems)}. Without these, --model toy runs clipdraw's toy world offline")
    return paths


def _verify_cached(weight: WeightFile, path: Path) -> Optional[str]:
    """None when ``path`` matches its known or recorded hash; else a short reason."""
    expected = weight.sha256
    record = _hash_record(path)
    if expected is None:
        if not record.is_file():  # placed by hand: trust on first use, check from now on
            with contextlib.suppress(OSError):
                atomic_write_bytes(record, (file_sha256(path) + "\n").encode())
            return None
        expected = record.read_text().strip()
    actual = file_sha256(path)
    return None if actual == expected.lower() else f"SHA-256 {actual[:12]}... differs from {expected[:12]}..."


def locate(name_or_path: str, kind: str) -> Union[Path, WeightFile]:
    """Without touching the network: an existing file path as is, else the named download.

    ``kind`` is ``"clip"``, ``"dvae"`` (the decoder) or ``"encoder"`` (the dVAE encoder, whose
    one name is ``openai``). Unknown names and missing paths fail here, before any download starts.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    if candidate.exists():
        raise ClipdrawError(f"{name_or_path} is not a regular file")
    known = clip_urls() if kind == "clip" else ENCODER_NAMES if kind == "encoder" else DVAE_URLS
    looks_like_path = name_or_path.startswith(("/", ".", "~")) or candidate.suffix in (".pt", ".pkl", ".pth", ".bin")
    if name_or_path not in known and looks_like_path:   # CLIP names contain '/', so judge by shape
        raise ClipdrawError(f"no such {kind} weight file: {candidate}")
    if kind == "encoder":
        if name_or_path not in ENCODER_NAMES:
            raise ClipdrawError(f"unknown dVAE encoder {name_or_path!r}: expected {', '.join(ENCODER_NAMES)} "
                                "or a path to an encoder.pkl file")
        return dvae_weight_file(ENCODER_NAMES[name_or_path])
    return clip_weight_file(name_or_path) if kind == "clip" else dvae_weight_file(name_or_path)


def materialize(source: Union[Path, WeightFile], offline: bool = False) -> Tuple[Path, str]:
    """A located source -> (local path, description), downloading a named file if needed."""
    if isinstance(source, Path):
        return source, str(source)
    return fetch(source, offline=offline), source.name


def resolve(name_or_path: str, kind: str, offline: bool = False) -> Tuple[Path, str]:
    """Map a model name or a file path to a local file; return (path, description)."""
    return materialize(locate(name_or_path, kind), offline=offline)


# --------------------------------------------------------------------------- safe dVAE unpickling

# Exactly what OpenAI's decoder.pkl / encoder.pkl hold: dall_e's modules, torch.nn
# containers and activations, and torch's tensor rebuilders. Anything else is refused.
_COMMON_GLOBALS = frozenset({
    ("dall_e.utils", "Conv2d"),
    ("torch.nn.modules.container", "Sequential"),
    ("torch.nn.modules.activation", "ReLU"),
    ("torch.nn.modules.linear", "Identity"),
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "device"),
    ("torch", "Size"),
    ("builtins", "set"),
    ("__builtin__", "set"),  # protocol-2 pickles name it so
})
DECODER_GLOBALS = _COMMON_GLOBALS | {
    ("dall_e.decoder", "Decoder"),
    ("dall_e.decoder", "DecoderBlock"),
    ("torch.nn.modules.upsampling", "Upsample"),
}
ENCODER_GLOBALS = _COMMON_GLOBALS | {
    ("dall_e.encoder", "Encoder"),
    ("dall_e.encoder", "EncoderBlock"),
    ("torch.nn.modules.pooling", "MaxPool2d"),
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for something outside the allow-list."""


def _restricted_pickle_module(allowed: frozenset) -> types.ModuleType:
    """A stand-in for the ``pickle`` module whose Unpickler resolves only ``allowed`` globals."""

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) not in allowed:
                raise RefusedGlobal(f"{module}.{name}")
            return super().find_class(module, name)

    shim = types.ModuleType("clipdraw_restricted_pickle")
    shim.Unpickler = RestrictedUnpickler
    shim.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()
    shim.UnpicklingError = pickle.UnpicklingError
    return shim


def load_dvae_module(path: Path, kind: str = "decoder") -> nn.Module:
    """Unpickle a whole dall_e Decoder (or Encoder) module without running foreign code.

    Works for both torch serialization formats (zip and legacy) and mends what pickles made
    with old torch lack on a modern one.
    """
    import dall_e  # noqa: F401,PLC0415  (registers the classes the pickle refers to)

    expected = dall_e.Decoder if kind == "decoder" else dall_e.Encoder
    allowed = DECODER_GLOBALS if kind == "decoder" else ENCODER_GLOBALS
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ClipdrawError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        module = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False,
                            pickle_module=_restricted_pickle_module(allowed))
    except RefusedGlobal as e:
        raise ClipdrawError(f"refusing to load {path}: it asks for {e}, which no dVAE {kind} contains "
                            f"(tampered or wrong file)") from None
    except Exception as e:  # truncated zip, garbage bytes, wrong pickle: all one message
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ClipdrawError(f"cannot read dVAE {kind} {path}: corrupt or not a torch file ({reason})") from None
    if not isinstance(module, expected):
        raise ClipdrawError(f"{path} holds a {type(module).__name__}, not a dall_e {expected.__name__}")
    for sub in module.modules():
        if isinstance(sub, nn.Upsample) and not hasattr(sub, "recompute_scale_factor"):
            sub.recompute_scale_factor = None  # absent from pickles made before torch 1.5
    return module


# --------------------------------------------------------------------------- CLIP


# Whether a pickle asked for something torch's weights-only unpickler refuses (code, or any
# object that is not a tensor or a container of them); the message names it "GLOBAL module.name".
_REFUSED_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")


def _load_error_reason(error: BaseException) -> str:
    """The line of a torch.load error that says what is wrong, without torch's advice to load
    the file unsafely."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and "weights_only" not in line and not line.strip().startswith("Check the documentation")]
    return " ".join(lines[0].split())[:160] if lines else type(error).__name__


def read_clip_state_dict(path: Path) -> dict:
    """A CLIP checkpoint's tensors, read without running anything the file could hold.

    A TorchScript archive (the format OpenAI publishes) through ``torch.jit.load``, whose
    unpickler knows torch's own types only; anything else through ``torch.load`` with
    ``weights_only=True``, which refuses every object that is not a tensor or a container of
    them. ``clip.load`` would call ``torch.load`` without it, which on torch < 2.6 unpickles
    (and so runs) whatever the file asks for.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            archive = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError:   # not TorchScript: a state dict, or not a checkpoint at all
        archive = None
    except Exception as e:  # noqa: BLE001  (jit.load raises ValueError and others for odd files)
        raise ClipdrawError(f"cannot read CLIP weights {path}: corrupt or not a CLIP checkpoint "
                            f"({_load_error_reason(e)})") from None
    if archive is not None:
        return dict(archive.state_dict())
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise ClipdrawError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001  (a refused object, truncated zip, garbage: one line each)
        refused = _REFUSED_GLOBAL.search(str(e))
        if refused:
            raise ClipdrawError(f"cannot read CLIP weights {path}: refusing to load it, its pickle asks for "
                                f"{refused.group(1)}: not a CLIP checkpoint (a state dict or TorchScript archive), "
                                "and unpickling it could run code") from None
        raise ClipdrawError(f"cannot read CLIP weights {path}: corrupt or not a CLIP checkpoint "
                            f"({_load_error_reason(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ClipdrawError(f"cannot read CLIP weights {path}: it holds a {type(state).__name__}, not a CLIP "
                            "checkpoint (a state dict of tensors)")
    return state


def load_clip_module(path: Path) -> nn.Module:
    """Load a CLIP checkpoint (TorchScript archive or state dict) as ``clip.load(path, jit=False)``
    would, in float32 on CPU, but reading it with ``read_clip_state_dict``: no code from the file runs."""
    state = read_clip_state_dict(path)
    clip = import_clip()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = clip.model.build_model(state)
    except Exception as e:  # noqa: BLE001  (missing keys, odd shapes: another model's tensors)
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ClipdrawError(f"cannot read CLIP weights {path}: corrupt or not a CLIP checkpoint ({reason})") from None
    return model.float().eval()
