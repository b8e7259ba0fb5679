"""The toy world's models, built from the same classes as the real ones (dall_e's Encoder and
Decoder, clip.model.CLIP) at tiny widths, plus a small GPT for the autoregressive paradigm;
and their storage as half-precision safetensors files shipped inside the package."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ClipdrawError
from ..io import atomic_path

WEIGHTS_DIR = Path(__file__).parent / "weights"   # shipped; $CLIPDRAW_TOY_WEIGHTS points elsewhere


def weights_dir() -> Path:
    return Path(os.environ.get("CLIPDRAW_TOY_WEIGHTS") or WEIGHTS_DIR)


def weights_source(folder: Optional[Path] = None) -> str:
    """Where toy weights come from (``folder``, default the one in use), for reports: empty for
    the shipped ones, else the folder, so that a report never passes another world off as the
    shipped one."""
    folder = Path(folder) if folder is not None else weights_dir()
    try:
        folder = folder.resolve()
        shipped = folder == WEIGHTS_DIR.resolve()
    except (OSError, RuntimeError):   # a link loop: not the shipped folder
        shipped = False
    return "" if shipped else f" (weights from {folder}, CLIPDRAW_TOY_WEIGHTS)"


DVAE_CONFIG = dict(n_hid=16, n_blk_per_group=1, vocab_size=128)
DECODER_N_INIT = 32
CLIP_CONFIG = dict(embed_dim=64, image_resolution=64, vision_layers=2, vision_width=64, vision_patch_size=8,
                   context_length=32, vocab_size=49408, transformer_width=64, transformer_heads=1,
                   transformer_layers=2)
# The ResNet form of the same class (OpenAI's RN50 layout at a tiny width): its convolutional
# stem knows shapes that 8-pixel patches blur (docs/toy-guidance.md).
RESNET_CLIP_CONFIG = {**CLIP_CONFIG, "vision_layers": (1, 1, 1, 1), "vision_width": 16, "vision_patch_size": None}
CLIP_TOWERS = {"vit": CLIP_CONFIG, "resnet": RESNET_CLIP_CONFIG}
GPT_CONFIG = dict(n_layer=4, n_head=4, n_embd=128, text_len=16, image_tokens=64)


def _unvalidated():
    """dall_e's attrs validators insist on real-size widths; the toy deliberately goes below them."""
    import attr  # noqa: PLC0415

    return attr.validators.disabled()


def build_dvae(seed: int = 0) -> Tuple[nn.Module, nn.Module]:
    import dall_e  # noqa: PLC0415

    with torch.random.fork_rng(devices=[]), _unvalidated():   # seeded, leaving the caller's RNG as it was
        torch.manual_seed(seed)
        encoder = dall_e.Encoder(**DVAE_CONFIG)
        decoder = dall_e.Decoder(n_init=DECODER_N_INIT, **DVAE_CONFIG)
    return encoder, decoder


def build_clip(seed: int = 0, tower: str = "vit") -> nn.Module:
    from ..weights import import_clip  # noqa: PLC0415

    with torch.random.fork_rng(devices=[]):   # seeded, leaving the caller's RNG as it was
        torch.manual_seed(seed)
        return import_clip().model.CLIP(**CLIP_TOWERS[tower]).float()


class GPT(nn.Module):
    """A decoder-only transformer over [caption words ; dVAE image tokens], DALL-E's layout."""

    def __init__(self, text_vocab: int, image_vocab: int, n_layer: int, n_head: int, n_embd: int,
                 text_len: int, image_tokens: int):
        super().__init__()
        self.text_vocab, self.image_vocab = text_vocab, image_vocab
        self.text_len, self.image_tokens = text_len, image_tokens
        self.text_embed = nn.Embedding(text_vocab, n_embd)
        self.image_embed = nn.Embedding(image_vocab + 1, n_embd)   # +1: the start-of-image token
        self.position = nn.Parameter(torch.zeros(text_len + image_tokens, n_embd))
        layer = nn.TransformerEncoderLayer(n_embd, n_head, 4 * n_embd, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, image_vocab)
        nn.init.normal_(self.position, std=0.02)
        length = text_len + image_tokens
        self.register_buffer("causal", torch.triu(torch.full((length, length), float("-inf")), 1), persistent=False)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """text (B, text_len) word ids; image (B, k) tokens, k <= image_tokens. Returns logits
        (B, k, image_vocab) for image positions 0..k-1 (position i sees the text and tokens < i)."""
        start = torch.full((image.shape[0], 1), self.image_vocab, dtype=torch.long, device=image.device)
        shifted = torch.cat([start, image[:, :-1]], dim=1) if image.shape[1] else start[:, :0]
        x = torch.cat([self.text_embed(text), self.image_embed(shifted)], dim=1)
        length = x.shape[1]
        x = self.blocks(x + self.position[:length], mask=self.causal[:length, :length], is_causal=True)
        return self.head(self.norm(x[:, self.text_len:]))

    @torch.no_grad()
    def next_token(self, text: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator,
                   temperature: float = 1.0, top_k: int = 0) -> torch.Tensor:
        """Sample the token after ``tokens`` (B, k); re-runs the prefix, which is tiny here."""
        logits = self(text, torch.cat([tokens, tokens.new_zeros(tokens.shape[0], 1)], 1))[:, -1] / temperature
        if top_k:
            kth = logits.topk(min(top_k, logits.shape[-1])).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.cat([tokens, torch.multinomial(F.softmax(logits, -1), 1, generator=generator)], 1)


class WordTokenizer:
    """Word-level ids for the toy captions: the world's vocabulary is a few dozen words."""

    PAD, UNK = 0, 1

    def __init__(self, words, length: int):
        self.words = list(words)
        self.index = {w: i + 2 for i, w in enumerate(self.words)}
        self.length = length

    def __len__(self) -> int:
        return len(self.words) + 2

    @staticmethod
    def split(text: str):
        return text.lower().replace(",", " ").split()

    def encode(self, texts) -> torch.Tensor:
        out = torch.zeros(len(texts), self.length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.index.get(w, self.UNK) for w in self.split(text)][: self.length]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


# --------------------------------------------------------------------------- storage


def save_weights(path: Path, state: Dict[str, torch.Tensor], metadata: dict) -> None:
    """Half-precision safetensors with the model's settings as JSON metadata."""
    from safetensors.torch import save_file  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous().cpu()
               for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"clipdraw": json.dumps(metadata)})


def load_weights(name: str, root: Optional[Path] = None) -> Tuple[Dict[str, torch.Tensor], dict]:
    from safetensors import safe_open  # noqa: PLC0415

    path = (root or weights_dir()) / f"{name}.safetensors"
    if not path.is_file():
        raise ClipdrawError(f"toy weights {path} are missing: run 'clipdraw toy train' to make them")
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            metadata = json.loads((f.metadata() or {}).get("clipdraw", "{}"))
    except Exception as e:   # truncated or foreign file
        raise ClipdrawError(f"cannot read toy weights {path}: {e}") from None
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}, metadata


def clip_state_for_saving(model: nn.Module, used_tokens: torch.Tensor) -> Dict[str, torch.Tensor]:
    """CLIP's state with the 49408-row token table cut to the rows the toy captions use."""
    state = dict(model.state_dict())
    state["token_embedding.rows"] = used_tokens.long()
    state["token_embedding.weight"] = state["token_embedding.weight"][used_tokens.long()]
    return state


def load_toy_clip(root: Optional[Path] = None, name: str = "clip") -> nn.Module:
    """Rebuild a toy CLIP (``clip``: the guide; ``judge``: one that never guides) through
    clip.model.build_model, the path real checkpoints take."""
    from ..weights import import_clip  # noqa: PLC0415

    state, _ = load_weights(name, root)
    rows = state.pop("token_embedding.rows")
    table = torch.zeros(CLIP_CONFIG["vocab_size"], state["token_embedding.weight"].shape[1])
    table[rows] = state["token_embedding.weight"]
    state["token_embedding.weight"] = table
    return import_clip().model.build_model(state).float().eval()


def load_toy_dvae(root: Optional[Path] = None) -> Tuple[nn.Module, nn.Module]:
    state, _ = load_weights("dvae", root)
    encoder, decoder = build_dvae()
    encoder.load_state_dict({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")})
    decoder.load_state_dict({k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")})
    return encoder.eval(), decoder.eval()


def gpt_config_from_metadata(meta: dict) -> dict:
    """The GPT's shape as saved with it; files from before it was saved are the toy's GPT_CONFIG."""
    config = {**GPT_CONFIG, **(meta.get("gpt_config") or {})}
    for key in ("image_tokens", "text_len"):
        if key in meta:
            config[key] = int(meta[key])
    return config


def load_toy_gpt(root: Optional[Path] = None) -> Tuple[GPT, WordTokenizer]:
    """The transformer in ``root``/transformer.safetensors and its word tokenizer. A file that
    is not one clipdraw wrote (another model's tensors, no clipdraw metadata, shapes that
    disagree with it) is refused in one line before any model is built."""
    from ..errors import first_line  # noqa: PLC0415

    path = (root or weights_dir()) / "transformer.safetensors"
    state, meta = load_weights("transformer", root)
    try:
        config = gpt_config_from_metadata(meta)
        words, image_vocab = meta["words"], meta["image_vocab"]
        sizes = {**config, "image_vocab": image_vocab}
        bad = [k for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, int) or v <= 0]
        if bad or not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"its metadata gives {bad[0]} = {sizes[bad[0]]!r}" if bad else
                             "its metadata's words are not a list of words")
        width, length = config["n_embd"], config["text_len"] + config["image_tokens"]
        expected = {"position": (length, width), "text_embed.weight": (len(words) + 2, width),
                    "image_embed.weight": (image_vocab + 1, width), "head.weight": (image_vocab, width)}
        for key, shape in expected.items():   # checked before the model is built: sizes come from the file
            if tuple(state[key].shape) != shape:
                raise ValueError(f"{key} is {tuple(state[key].shape)} where its metadata implies {shape}")
        tokenizer = WordTokenizer(words, config["text_len"])
        model = GPT(len(tokenizer), image_vocab, **config)
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AssertionError, AttributeError) as e:
        reason = f"it has no {e.args[0]!r}" if isinstance(e, KeyError) and e.args else first_line(e)
        raise ClipdrawError(f"{path} is not a clipdraw transformer ({reason}): --transformer takes a folder "
                            "written by 'clipdraw toy train --coco'") from None
    return model.eval(), tokenizer


def cosine_lr(step: int, total: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))
