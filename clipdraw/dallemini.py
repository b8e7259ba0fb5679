"""The second paradigm: dalle-mini's transformer, through min-dalle, behind the optimizer's interface.

dalle-mini encodes the prompt with a BART encoder, then an autoregressive decoder samples
256 VQGAN tokens (a 16x16 grid), and the VQGAN detokenizer turns them into a 256x256
image. min-dalle (``pip install -e ".[dallemini]"``) is a PyTorch port of dalle-mini and
dalle-mega; this module drives it so that a run gives the same ``GenerationResult`` (and
run folder) as the optimizer: frames from min-dalle's progressive outputs (the image every
32 tokens), each candidate scored by CLIP, the best k kept (``rerank=(n, k)``).

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
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from PIL import Image
from tqdm.auto import tqdm

from . import weights
from .device import resolve_device
from .errors import ClipdrawError
from .models import ClipModel
from .optimize import Frame, GenerationResult, to_pil
from .prompts import parse_prompts

MIN_DALLE_URL = "https://huggingface.co/kuprel/min-dalle/resolve/main/"   # min_dalle.min_dalle.MIN_DALLE_REPO
INSTALL_HINT = 'pip install -e ".[dallemini]" (or pip install min-dalle)'
DTYPES = ("float32", "float16", "bfloat16")
IMAGE_TOKENS = 256     # 16x16 VQGAN tokens per image
FRAME_TOKENS = 32      # min-dalle yields a progressive image every 32 tokens
TEXT_TOKENS = 64       # min-dalle pads or cuts the prompt to 64 BART tokens
IMAGE_VOCAB = 2 ** 14  # VQGAN codebook; the decoder samples among its first 2**14 logits
MAX_GRID = 8           # 64 images in one pass; memory grows with grid**2

# min-dalle's two published architectures (head counts cannot be read from weight files).
ARCHITECTURES = {
    "mini": dict(layer_count=12, attention_head_count=16, embed_count=1024, glu_embed_count=2730,
                 text_vocab_count=50264, image_vocab_count=16384),
    "mega": dict(layer_count=24, attention_head_count=32, embed_count=2048, glu_embed_count=4096,
                 text_vocab_count=50272, image_vocab_count=16415),
}


# --------------------------------------------------------------------------- settings


def parse_rerank(spec: Union[str, Tuple[int, int], List[int], None]) -> Optional[Tuple[int, int]]:
    """``"16:4"`` -> (16, 4): draw 16 candidates, keep the 4 that CLIP ranks best."""
    if spec is None:
        return None
    if isinstance(spec, str):
        parts = spec.split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ClipdrawError(f"rerank {spec!r} is not n:k (e.g. 16:4: draw 16 candidates, keep the best 4)")
        spec = (int(parts[0]), int(parts[1]))
    n, k = spec
    if not (isinstance(n, int) and isinstance(k, int) and 1 <= k <= n):
        raise ClipdrawError(f"rerank n:k needs 1 <= k <= n, got {n}:{k}")
    return (n, k)


@dataclass
class DalleMiniConfig:
    """Settings of one dalle-mini run (recorded whole in run.json)."""

    seed: int = 0
    mega: bool = False                 # dalle-mega (2.6B parameters) instead of dalle-mini
    grid: int = 1                      # images drawn at once: a grid x grid batch per pass
    top_k: int = 256                   # sample among the k likeliest tokens (0: all)
    temperature: float = 1.0
    supercondition: float = 16.0       # classifier-free guidance: weight of the prompt over no prompt
    dtype: str = "float32"             # of the BART encoder and decoder; float16/bfloat16 need CUDA
    rerank: Optional[Tuple[int, int]] = None   # (n, k): n candidates, best k by CLIP; "n:k" accepted
    progressive: bool = True           # decode every 32 tokens for frames (7 more VQGAN passes per pass)

    def __post_init__(self):
        self.rerank = parse_rerank(self.rerank)
        if not isinstance(self.grid, int) or not 1 <= self.grid <= MAX_GRID:
            raise ClipdrawError(f"grid must be a whole number from 1 to {MAX_GRID}, got {self.grid!r}")
        if not isinstance(self.top_k, int) or not 0 <= self.top_k <= IMAGE_VOCAB:
            raise ClipdrawError(f"top-k must be from 0 (all) to {IMAGE_VOCAB}, got {self.top_k!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ClipdrawError(f"temperature must be positive, got {self.temperature}")
        if not (math.isfinite(self.supercondition) and self.supercondition >= 0):
            raise ClipdrawError(f"supercondition must be 0 or more, got {self.supercondition}")
        if self.dtype not in DTYPES:
            raise ClipdrawError(f"unknown dtype {self.dtype!r}: expected one of {', '.join(DTYPES)}")
        per_pass = self.grid ** 2
        if self.rerank and self.rerank[0] % per_pass:
            raise ClipdrawError(f"rerank {self.rerank[0]}:{self.rerank[1]} with grid {self.grid}: n must be a "
                                f"multiple of {per_pass} (each pass draws a {self.grid}x{self.grid} grid)")

    @property
    def variant(self) -> str:
        return "mega" if self.mega else "mini"

    @property
    def candidates(self) -> int:
        return self.rerank[0] if self.rerank else self.grid ** 2

    @property
    def keep(self) -> int:
        return self.rerank[1] if self.rerank else self.grid ** 2

    @property
    def passes(self) -> int:
        return self.candidates // self.grid ** 2


def prompt_text(prompt: str) -> str:
    """The one text dalle-mini conditions on; weighted mixtures are the optimizer's."""
    prompts = parse_prompts(prompt)
    if len(prompts) != 1:
        raise ClipdrawError("dalle-mini draws one text: weighted prompts (a|b:0.5) are for the optimizer")
    return prompts[0].text


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


# --------------------------------------------------------------------------- the engine


@dataclass
class DalleMiniResult(GenerationResult):
    """A GenerationResult with the kept candidates: ``images`` best first, ``scores`` their CLIP similarity."""

    images: List[Image.Image] = field(default_factory=list, repr=False)
    scores: List[float] = field(default_factory=list)
    candidates: List[dict] = field(default_factory=list)   # every drawn image: index, pass, similarity, rank

    @property
    def final_similarity(self) -> float:
        """Mean CLIP similarity of the kept images, which final.png shows."""
        if not self.scores:
            return self.frames[-1].similarity if self.frames else float("nan")
        return sum(self.scores) / len(self.scores)

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(len(self.candidates), 1)

    def summary(self) -> dict:
        return {**super().summary(), "seconds_per_image": round(self.seconds_per_image, 3),
                "candidates": self.candidates, "kept": [c["index"] for c in
                                                        sorted((c for c in self.candidates if c["rank"]),
                                                               key=lambda c: c["rank"])]}


def image_grid(images: List[Image.Image], columns: int) -> Image.Image:
    """Images side by side, row by row; empty cells stay black."""
    width, height = images[0].size
    rows = math.ceil(len(images) / columns)
    grid = Image.new("RGB", (columns * width, rows * height))
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * width, (i // columns) * height))
    return grid


class DalleMiniEngine:
    """Prompt -> BART encoder -> decoder samples VQGAN tokens -> detokenizer -> images, CLIP-ranked."""

    name = "dallemini"

    def __init__(self, model, clip: Optional[ClipModel] = None, mega: bool = False, dtype: str = "float32",
                 info: Optional[dict] = None):
        self.model, self.clip, self.mega, self.dtype = model, clip, mega, dtype
        self.device = torch.device(model.device)
        self.info = info or {}
        if clip is not None:
            clip.to(self.device)

    @classmethod
    def load(cls, config: Optional[DalleMiniConfig] = None, device: Union[str, torch.device] = "auto",
             clip_model: Optional[str] = weights.DEFAULT_CLIP, offline: bool = False,
             root: Optional[Path] = None) -> "DalleMiniEngine":
        """Fetch (unless cached) and load the variant ``config`` asks for, and CLIP for ranking.

        ``clip_model=None`` skips CLIP: no scores, and ``rerank`` is refused.
        """
        from .models import load_clip  # noqa: PLC0415

        config = config or DalleMiniConfig()
        target = device if isinstance(device, torch.device) else resolve_device(device)
        check_dtype(config.dtype, target)
        import_min_dalle()    # a missing package is reported before any download
        paths = fetch_weights(config.mega, offline=offline, root=root)
        clip, clip_info = load_clip(clip_model, target, offline=offline) if clip_model else (None, None)
        model = load_min_dalle(paths, mega=config.mega, dtype=config.dtype, device=target)
        info = {"dallemini": {"name": f"dalle-{config.variant}", "dtype": config.dtype,
                              "folder": str(paths["encoder.pt"].parent),
                              "files": {k: str(p) for k, p in paths.items()},
                              "layers": model.layer_count, "embed": model.embed_count},
                "clip": clip_info}
        return cls(model, clip, mega=config.mega, dtype=config.dtype, info=info)

    def _scores(self, pixels: torch.Tensor, text_embed: Optional[torch.Tensor]) -> List[float]:
        if text_embed is None:
            return [float("nan")] * pixels.shape[0]
        return (self.clip.encode_image(pixels.to(self.device)) @ text_embed.T)[:, 0].tolist()

    def generate(self, prompt: str, config: Optional[DalleMiniConfig] = None,
                 on_frame: Optional[Callable[[Frame], None]] = None, progress: bool = True) -> DalleMiniResult:
        """Draw ``config.candidates`` images in passes of grid x grid, keep the best ``config.keep``.

        Frames are each pass's grid every 32 tokens (``iteration`` counts tokens over all
        passes). Ctrl-C ends early: the candidates finished so far are ranked and kept.
        """
        config = config or DalleMiniConfig()
        if (config.mega, config.dtype) != (self.mega, self.dtype):
            raise ClipdrawError(f"this engine holds dalle-{'mega' if self.mega else 'mini'} in {self.dtype}; "
                                f"the config asks for dalle-{config.variant} in {config.dtype}")
        text = prompt_text(prompt)
        if config.rerank and self.clip is None:
            raise ClipdrawError("rerank needs CLIP: load the engine with a clip model")
        text_embed = self.clip.encode_text([text]) if self.clip is not None else None
        frames: List[Frame] = []
        images: List[Image.Image] = []
        candidates: List[dict] = []
        tokens_done, interrupted = 0, False
        start = time.perf_counter()
        bar = tqdm(total=config.passes * IMAGE_TOKENS, desc=f"dalle-{config.variant}", unit="tok",
                   disable=not progress, dynamic_ncols=True)
        with inference_session(self.device, seed=config.seed):
            try:
                for pass_index in range(config.passes):
                    stream = self.model.generate_images_stream(
                        text=text, seed=-1, grid_size=config.grid, progressive_outputs=config.progressive,
                        temperature=config.temperature, top_k=config.top_k,
                        supercondition_factor=config.supercondition)   # seed -1: min-dalle must not reseed
                    for step, batch in enumerate(stream, 1):
                        in_pass = min(step * FRAME_TOKENS, IMAGE_TOKENS) if config.progressive else IMAGE_TOKENS
                        pixels = batch.float().div(255).permute(0, 3, 1, 2)       # (grid**2, 3, 256, 256)
                        scores = self._scores(pixels, text_embed)
                        pictures = [to_pil(p) for p in pixels]
                        frame = Frame(pass_index * IMAGE_TOKENS + in_pass, image_grid(pictures, config.grid),
                                      sum(scores) / len(scores))
                        frames.append(frame)
                        if on_frame:
                            on_frame(frame)
                        bar.update(pass_index * IMAGE_TOKENS + in_pass - tokens_done)
                        tokens_done = pass_index * IMAGE_TOKENS + in_pass
                        if in_pass == IMAGE_TOKENS:
                            for picture, score in zip(pictures, scores):
                                candidates.append({"index": len(candidates), "pass": pass_index,
                                                   "similarity": score, "rank": None})
                                images.append(picture)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                bar.close()
        seconds = time.perf_counter() - start
        if not frames:
            raise ClipdrawError("interrupted before the first frame")
        order = list(range(len(candidates)))
        if config.rerank:
            order.sort(key=lambda i: -candidates[i]["similarity"])   # stable: ties keep drawing order
        kept = order[:config.keep]
        for rank, i in enumerate(kept, 1):
            candidates[i]["rank"] = rank
        kept_images = [images[i] for i in kept]
        columns = config.grid if not config.rerank else math.ceil(math.sqrt(len(kept) or 1))
        return DalleMiniResult(
            prompt=prompt, prompts=parse_prompts(prompt), config=config,
            image=image_grid(kept_images, columns) if kept_images else frames[-1].image,
            frames=frames, losses=[], similarities=[f.similarity for f in frames], iterations_done=tokens_done,
            seconds=seconds, interrupted=interrupted, images=kept_images,
            scores=[candidates[i]["similarity"] for i in kept], candidates=candidates)
