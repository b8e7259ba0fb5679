"""min-dalle, loaded safely: the models behind the dallemini engine (``clipdraw.engines.dallemini``).

dalle-mini encodes the prompt with a BART encoder, then an autoregressive decoder samples
256 VQGAN tokens (a 16x16 grid), and the VQGAN detokenizer turns them into a 256x256
image. min-dalle (``pip install -e ".[dallemini]"``) is a PyTorch port of dalle-mini and
dalle-mega; this module fetches its files and assembles it, and the engine draws with it.

min-dalle has traps that this module keeps away from the rest of the process:

* ``import min_dalle`` switches autograd off for the whole process and sets the thread
  count: :func:`import_min_dalle` imports it with that state saved and restored, and
  generation runs under a local ``torch.no_grad()``;
* ``MinDalle.__init__`` GETs config.json on every construction and downloads missing files
  without checking the HTTP status: clipdraw never runs it. Files are fetched by
  ``clipdraw.weights`` (progress, atomic rename, status checked, ``--offline``) and the
  model is assembled from them (:func:`load_min_dalle`);
* sampling calls ``torch.manual_seed`` on the global generator: clipdraw seeds a forked
  RNG instead, so the caller's random state is untouched and seed 0 is a seed too;
* its deprecated ``torch.cuda.amp.autocast`` calls warn on every token: those two
  warnings, and only those, are silenced during generation.
"""

from __future__ import annotations

import contextlib
import functools
import json
import warnings
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

import torch

from . import weights
from .device import resolve_device
from .config import DALLEMINI_IMAGE_VOCAB as IMAGE_VOCAB
from .errors import ClipdrawError

MIN_DALLE_URL = "https://huggingface.co/kuprel/min-dalle/resolve/main/"   # min_dalle.min_dalle.MIN_DALLE_REPO
INSTALL_HINT = 'pip install -e ".[dallemini]" (or pip install min-dalle)'
IMAGE_TOKENS = 256     # 16x16 VQGAN tokens per image
FRAME_TOKENS = 32      # min-dalle yields a progressive image every 32 tokens
TEXT_TOKENS = 64       # min-dalle pads or cuts the prompt to 64 BART tokens

# min-dalle's two published architectures (head counts cannot be read from weight files).
ARCHITECTURES = {
    "mini": dict(layer_count=12, attention_head_count=16, embed_count=1024, glu_embed_count=2730,
                 text_vocab_count=50264, image_vocab_count=16384),
    "mega": dict(layer_count=24, attention_head_count=32, embed_count=2048, glu_embed_count=4096,
                 text_vocab_count=50272, image_vocab_count=16415),
}


def check_dtype(dtype: str, device: torch.device) -> None:
    """min-dalle mixes precisions through CUDA autocast only: half types fail on a CPU."""
    if dtype != "float32" and device.type != "cuda":
        raise ClipdrawError(f"--dtype {dtype} needs a CUDA device (min-dalle mixes precisions through CUDA "
                            f"autocast); use --dtype float32 on {device.type}")


# --------------------------------------------------------------------------- importing min-dalle safely


@contextlib.contextmanager
def _torch_state_kept() -> Iterator[None]:
    """Restore what ``import min_dalle`` changes for the whole process."""
    grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
    cudnn, tf32 = torch.backends.cudnn.enabled, torch.backends.cudnn.allow_tf32
    try:
        yield
    finally:
        torch.set_grad_enabled(grad)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.backends.cudnn.enabled, torch.backends.cudnn.allow_tf32 = cudnn, tf32


def import_min_dalle():
    """The ``min_dalle`` package, imported without leaving autograd off or the thread count changed.

    Every import of min-dalle in clipdraw (and its tests) goes through here: a bare
    ``import min_dalle`` anywhere, even at test collection, would switch gradients off for
    everything that runs after it.
    """
    with _torch_state_kept():
        try:
            import min_dalle  # noqa: PLC0415
            import min_dalle.models  # noqa: F401,PLC0415
            import min_dalle.text_tokenizer  # noqa: F401,PLC0415
        except ImportError as e:
            raise ClipdrawError(f"the dalle-mini engine needs min-dalle, which cannot be imported ({e}): "
                                f"{INSTALL_HINT}") from None
    return min_dalle


@contextlib.contextmanager
def _quiet_autocast() -> Iterator[None]:
    """Silence min-dalle's deprecated ``torch.cuda.amp.autocast`` (and its CPU fallback) warnings only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.cuda\.amp\.autocast\(args\.\.\.\)` is deprecated",
                                category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"CUDA is not available or torch_xla is imported\. "
                                                  r"Disabling autocast", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"In CUDA autocast, but the target dtype is not supported",
                                category=UserWarning)
        yield


@contextlib.contextmanager
def inference_session(device: torch.device, seed: Optional[int] = None) -> Iterator[None]:
    """Where min-dalle runs: no autograd, quiet autocast, and (with ``seed``) a forked, seeded RNG."""
    cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with _torch_state_kept(), torch.no_grad(), _quiet_autocast(), torch.random.fork_rng(devices=cuda_devices):
        if seed is not None:
            torch.manual_seed(seed)
        yield


# --------------------------------------------------------------------------- weights


def weight_files(mega: bool = False) -> Dict[str, weights.WeightFile]:
    """min-dalle's files for one variant, keyed by their name in its model folder.

    In the cache they keep min-dalle's own layout: ``min-dalle/dalle_bart_mini/encoder.pt``
    (``_mega``), ..., and ``min-dalle/vqgan/detoker.pt``.
    """
    variant = "mega" if mega else "mini"
    suffix = "" if mega else "_mini"
    remote = {"vocab.json": f"vocab{suffix}.json", "merges.txt": f"merges{suffix}.txt",
              "encoder.pt": f"encoder{suffix}.pt", "decoder.pt": f"decoder{suffix}.pt"}
    files = {name: weights.WeightFile(name=name, url=MIN_DALLE_URL + source, kind=f"dalle-{variant}",
                                      filename=f"min-dalle/dalle_bart_{variant}/{name}")
             for name, source in remote.items()}
    files["detoker.pt"] = weights.WeightFile(name="detoker.pt", url=MIN_DALLE_URL + "detoker.pt", kind="VQGAN",
                                             filename="min-dalle/vqgan/detoker.pt")
    return files


def fetch_weights(mega: bool = False, offline: bool = False, root: Optional[Path] = None) -> Dict[str, Path]:
    """Local paths of min-dalle's files, downloading the missing ones unless ``offline``."""
    files = weight_files(mega)
    if offline:
        missing = [w for w in files.values() if not w.path(root).is_file()]
        if len(missing) > 1:   # one line that still says how much is missing
            first = missing[0]
            raise ClipdrawError(f"--offline: {len(missing)} min-dalle files are not in the cache: download "
                                f"{first.source_url} and place it at {first.path(root)}, and likewise "
                                f"{', '.join(w.name for w in missing[1:])} (see README, dalle-mini cache layout)")
    return {name: weights.fetch(w, offline=offline, root=root) for name, w in files.items()}


def _read_params(path: Path, what: str) -> dict:
    try:
        params = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, garbage, a pickle of something else: one message
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ClipdrawError(f"cannot read {what} {path}: corrupt or not a torch file ({reason})") from None
    if not isinstance(params, dict):
        raise ClipdrawError(f"{path} holds a {type(params).__name__}, not a {what} state dict")
    return params


def _sizes(params: dict, path: Path, what: str) -> Tuple[int, int, int, int]:
    """(layers, embed, glu, vocabulary rows) read from a BART state dict's shapes."""
    needed = ("embed_tokens.weight", "layers.0.glu.fc0.weight")
    absent = [k for k in needed if k not in params]
    if absent:
        raise ClipdrawError(f"{path} is not a min-dalle {what}: it has no {absent[0]!r}")
    layers = 1 + max(int(k.split(".")[1]) for k in params if k.startswith("layers."))
    rows, embed = params["embed_tokens.weight"].shape
    return layers, int(embed), int(params["layers.0.glu.fc0.weight"].shape[0]), int(rows)


def _load_into(module: torch.nn.Module, params: dict, path: Path, what: str, strict: bool) -> None:
    try:
        # min-dalle loads its BART halves non-strictly; shapes must still match.
        module.load_state_dict(params, strict=strict)
    except RuntimeError as e:
        reason = " ".join(str(e).split())[:200]
        raise ClipdrawError(f"{path} does not fit min-dalle's {what} ({reason})") from None


def load_min_dalle(paths: Dict[str, Path], mega: bool = False, dtype: str = "float32",
                   device: Union[str, torch.device] = "cpu"):
    """A ``min_dalle.MinDalle`` assembled from local files, without touching the network.

    Layer count, widths and vocabularies are read from the files' shapes (so smaller or
    retrained models load too); the attention head count is the variant's.
    """
    md = import_min_dalle()
    target = device if isinstance(device, torch.device) else resolve_device(device)
    check_dtype(dtype, target)
    variant = "mega" if mega else "mini"
    try:
        vocab = json.loads(Path(paths["vocab.json"]).read_text(encoding="utf8"))
        merges = Path(paths["merges.txt"]).read_text(encoding="utf8").split("\n")[1:-1]  # header, trailing newline
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ClipdrawError(f"cannot read dalle-{variant} tokenizer files {paths['vocab.json']}, "
                            f"{paths['merges.txt']}: {e}") from None
    if not isinstance(vocab, dict) or not {"<s>", "</s>", "<unk>"} <= set(vocab):
        raise ClipdrawError(f"{paths['vocab.json']} is not a BART vocabulary (needs <s>, </s>, <unk>)")
    tokenizer = md.text_tokenizer.TextTokenizer(vocab, merges)

    heads = ARCHITECTURES[variant]["attention_head_count"]
    enc_params = _read_params(paths["encoder.pt"], "min-dalle encoder")
    dec_params = _read_params(paths["decoder.pt"], "min-dalle decoder")
    enc_layers, enc_embed, enc_glu, text_vocab = _sizes(enc_params, paths["encoder.pt"], "encoder")
    dec_layers, embed, glu, image_rows = _sizes(dec_params, paths["decoder.pt"], "decoder")
    if enc_embed != embed or embed % heads:
        raise ClipdrawError(f"{paths['encoder.pt']} and {paths['decoder.pt']}: widths {enc_embed} and {embed} must "
                            f"be equal and split into {heads} heads (dalle-{variant})")
    if max(vocab.values()) >= text_vocab:
        raise ClipdrawError(f"{paths['vocab.json']} has token ids up to {max(vocab.values())}, beyond the "
                            f"encoder's {text_vocab} embeddings: the files belong to different models")
    if image_rows <= IMAGE_VOCAB:
        raise ClipdrawError(f"{paths['decoder.pt']}: {image_rows} image tokens, min-dalle needs more than "
                            f"{IMAGE_VOCAB}")
    encoder = md.models.DalleBartEncoder(layer_count=enc_layers, embed_count=enc_embed, attention_head_count=heads,
                                         text_vocab_count=text_vocab, text_token_count=TEXT_TOKENS,
                                         glu_embed_count=enc_glu, device=str(target))
    _load_into(encoder, enc_params, paths["encoder.pt"], "encoder", strict=False)
    decoder = md.models.DalleBartDecoder(image_vocab_count=image_rows - 1, embed_count=embed,
                                         attention_head_count=heads, glu_embed_count=glu, layer_count=dec_layers,
                                         device=str(target))
    _load_into(decoder, dec_params, paths["decoder.pt"], "decoder", strict=False)
    del enc_params, dec_params
    detokenizer = md.models.VQGanDetokenizer()
    _load_into(detokenizer, _read_params(paths["detoker.pt"], "VQGAN detokenizer"), paths["detoker.pt"],
               "VQGAN detokenizer", strict=True)
    return assemble(tokenizer, encoder, decoder, detokenizer, mega=mega, dtype=dtype, device=target)


def assemble(tokenizer, encoder, decoder, detokenizer, mega: bool, dtype: str, device: torch.device):
    """Hand ready modules to min-dalle's sampler: a ``MinDalle`` whose constructor never runs."""
    return _cached_min_dalle_class()(tokenizer, encoder, decoder, detokenizer, mega, getattr(torch, dtype), device)


@functools.lru_cache(maxsize=None)
def _cached_min_dalle_class():
    """A MinDalle subclass built from parts; defined on first use because min-dalle is optional."""
    md = import_min_dalle()

    class CachedMinDalle(md.MinDalle):
        """min-dalle's sampling loop over modules clipdraw loaded. ``MinDalle.__init__`` (which
        GETs config.json and downloads missing files unchecked) is deliberately not called."""

        def __init__(self, tokenizer, encoder, decoder, detokenizer, is_mega, dtype, device):  # noqa: W0231
            self.tokenizer, self.is_mega, self.dtype, self.device = tokenizer, is_mega, dtype, str(device)
            self.encoder = encoder.to(dtype).eval().to(device)
            self.decoder = decoder.to(dtype).eval().to(device)
            self.detokenizer = detokenizer.eval().to(device)   # min-dalle keeps the VQGAN in float32
            self.is_reusable, self.is_verbose = True, False     # keep every module loaded; no prints
            self.text_token_count = TEXT_TOKENS
            self.layer_count, self.embed_count = decoder.layer_count, decoder.embed_count

        def _no_network(self, *args, **kwargs):
            raise ClipdrawError("min-dalle tried to load or download files itself; clipdraw fetches them "
                                "(clipdraw.dallemini.fetch_weights)")

        download_tokenizer = download_encoder = download_decoder = download_detokenizer = _no_network
        init_tokenizer = init_encoder = init_decoder = init_detokenizer = _no_network

    return CachedMinDalle


def random_min_dalle(mega: bool = False, dtype: str = "float32", device: Union[str, torch.device] = "cpu",
                     layer_count: Optional[int] = None, seed: int = 0):
    """The real architecture with random weights: what benchmarks time (no download needed).

    ``layer_count`` scales the encoder and decoder depth down where memory or time is short.
    """
    md = import_min_dalle()
    target = device if isinstance(device, torch.device) else resolve_device(device)
    check_dtype(dtype, target)
    arch = dict(ARCHITECTURES["mega" if mega else "mini"])
    if layer_count:
        arch["layer_count"] = layer_count
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "\u0120": 4,
             **{c: 5 + i for i, c in enumerate(letters)}}   # every letter a token: text has no effect on cost
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = md.models.DalleBartEncoder(layer_count=arch["layer_count"], embed_count=arch["embed_count"],
                                             attention_head_count=arch["attention_head_count"],
                                             text_vocab_count=arch["text_vocab_count"], text_token_count=TEXT_TOKENS,
                                             glu_embed_count=arch["glu_embed_count"], device=str(target))
        decoder = md.models.DalleBartDecoder(image_vocab_count=arch["image_vocab_count"],
                                             embed_count=arch["embed_count"],
                                             attention_head_count=arch["attention_head_count"],
                                             glu_embed_count=arch["glu_embed_count"],
                                             layer_count=arch["layer_count"], device=str(target))
        detokenizer = md.models.VQGanDetokenizer()
    tokenizer = md.text_tokenizer.TextTokenizer(vocab, [])
    return assemble(tokenizer, encoder, decoder, detokenizer, mega=mega, dtype=dtype, device=target)
