"""Training the toy transformer on a real image-caption set: a tiny COCO-format fixture,
a tiny dall_e Encoder pickled whole like encoder.pkl, the CLI's --coco path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_models
from clipdraw.errors import ClipdrawError
from clipdraw.toy.coco import read_coco_captions, tokenize_images, train_coco
from clipdraw.toy.models import load_toy_gpt, load_weights
from clipdraw.toy.train import TrainConfig
from clipdraw.weights import load_dvae_module

CAPTIONS = [
    "A snowy mountain under a blue sky.",
    "Mountain peaks at dawn",
    "People walking on the BEACH.",
    "A sandy beach with palm trees",
    "Beaches of the south coast",          # plural: not the whole word 'beach'
    "A cat sitting on a seat",
    "A beachfront hotel at night",         # 'beach' inside a word: no match
    "Waves on a beach, seen from a mountain",
]


@pytest.fixture
def coco(tmp_path):
    """12 small coloured images (two not square), 2 captions each, plus one caption for a lost file."""
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(12):
        name = f"{i:012d}.png"
        size = (40, 32) if i == 3 else (32, 48) if i == 7 else (32, 32)
        pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8) + rng.integers(0, 256, 3, dtype=np.uint8)
        pixels[: size[1] // 2] //= 2
        Image.fromarray(pixels).save(images_dir / name)
        images.append({"id": 100 + i, "file_name": name, "width": size[0], "height": size[1]})
        for j in range(2):
            annotations.append({"id": len(annotations), "image_id": 100 + i,
                                "caption": CAPTIONS[(i + 3 * j) % len(CAPTIONS)]})
    images.append({"id": 999, "file_name": "lost.png"})
    annotations.append({"id": len(annotations), "image_id": 999, "caption": "a mountain lake"})
    path = tmp_path / "captions_train.json"
    path.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations}))
    return path, images_dir


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    return tiny_models.save_tiny_encoder(tmp_path_factory.mktemp("encoder") / "encoder.pkl")


def test_tiny_encoder_loads_through_the_restricted_unpickler(encoder_file):
    encoder = load_dvae_module(encoder_file, "encoder")
    assert encoder.vocab_size == 32 and encoder(torch.rand(1, 3, 32, 32)).shape == (1, 32, 4, 4)


def test_keyword_filter_keeps_whole_words_in_any_case(coco, capsys):
    path, images_dir = coco
    pairs = read_coco_captions(path, images_dir, ["beach"])
    captions = {c for _, c in pairs}
    assert captions == {"People walking on the BEACH.", "A sandy beach with palm trees",
                        "Waves on a beach, seen from a mountain"}
    assert all(p.parent == images_dir and p.is_file() for p, _ in pairs)
    assert len(read_coco_captions(path, images_dir)) == 24          # no filter: every caption with its file
    mountain = read_coco_captions(path, images_dir, ["Mountain", "cat"])
    assert {c for _, c in mountain} >= {"A cat sitting on a seat", "Mountain peaks at dawn"}
    assert "1 with the image file missing" in capsys.readouterr().err   # the lost.png caption


@pytest.mark.parametrize("content,pattern", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a COCO captions file"),
    ('{"images": []}', "'annotations' is missing"),
    ('{"images": [{"id": 1}], "annotations": []}', "images[0] lacks"),
    ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1}]}', "annotations[0] lacks"),
    ('{"images": [], "annotations": []}', "no caption in"),
])
def test_bad_caption_files_fail_in_one_line(tmp_path, content, pattern):
    path = tmp_path / "captions.json"
    path.write_text(content)
    with pytest.raises(ClipdrawError, match=pattern.replace("[", r"\[")) as info:
        read_coco_captions(path, tmp_path)
    assert "\n" not in str(info.value)


def test_missing_inputs_and_empty_selections(coco, tmp_path):
    path, images_dir = coco
    with pytest.raises(ClipdrawError, match="captions file .* does not exist"):
        read_coco_captions(tmp_path / "nope.json", images_dir)
    with pytest.raises(ClipdrawError, match="images folder .* does not exist"):
        read_coco_captions(path, tmp_path / "no-such-folder")
    with pytest.raises(ClipdrawError, match="containing any of: volcano"):
        read_coco_captions(path, images_dir, ["volcano"])
    with pytest.raises(ClipdrawError, match="has its image in"):
        read_coco_captions(path, images_dir, ["lake"])                   # only the lost file's caption


class CountingEncoder(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_image_tokens_are_cached_and_reused(coco, encoder_file, tmp_path):
    path, images_dir = coco
    pairs = read_coco_captions(path, images_dir, ["beach", "mountain"])
    encoder = CountingEncoder(load_dvae_module(encoder_file, "encoder"))
    cache = tmp_path / "token-cache"
    first = tokenize_images(pairs, encoder, size=32, cache_dir=cache, batch=4)
    assert first.dtype == torch.long and first.shape == (len(pairs), 16) and int(first.max()) < 32
    calls = encoder.calls
    assert calls == -(-len({p for p, _ in pairs}) // 4)      # each distinct image encoded once
    assert len(list(cache.glob("coco-tokens-*.safetensors"))) == 1 and not list(cache.glob(".*part"))
    again = tokenize_images(pairs, encoder, size=32, cache_dir=cache, batch=4)
    assert encoder.calls == calls and torch.equal(first, again)
    same_image = [i for i, (p, _) in enumerate(pairs) if p == pairs[0][0]]
    assert all(torch.equal(first[i], first[0]) for i in same_image)
    # A changed image file or another size is a different key: encoded afresh.
    changed = pairs[0][0]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    tokenize_images(pairs, encoder, size=32, cache_dir=cache, batch=4)
    assert encoder.calls == 2 * calls
    assert tokenize_images(pairs, encoder, size=16, cache_dir=cache, batch=64).shape == (len(pairs), 4)


def test_train_coco_writes_a_loadable_transformer(coco, encoder_file, tmp_path):
    path, images_dir = coco
    out = tmp_path / "coco-transformer"
    config = TrainConfig(gpt_steps=3, gpt_batch=4)
    summary = train_coco(path, images_dir, ["beach", "mountain"], str(encoder_file), out=out, config=config,
                         device="cpu", progress=False, size=32, cache_dir=tmp_path / "cache")
    assert summary["image_tokens"] == 16 and summary["image_vocab"] == 32
    assert [e["step"] for e in summary["log"]] == [0, 2]
    state, meta = load_weights("transformer", out)
    assert meta["source"] == "coco" and meta["image_tokens"] == 16 and meta["image_vocab"] == 32
    assert {"beach", "mountain", "snowy"} <= set(meta["words"]) and "beach." not in meta["words"]
    model, tokenizer = load_toy_gpt(out)
    assert model.image_tokens == 16 and model.text_len == meta["text_len"]
    text = tokenizer.encode(["a beach"])
    assert model(text, torch.zeros(1, 16, dtype=torch.long)).shape == (1, 16, 32)
    assert json.loads((out / "train_log.json").read_text())["captions"] == summary["captions"]


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "clipdraw", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=os.environ.copy())


def test_cli_trains_on_a_caption_set(coco, encoder_file, tmp_path):
    path, images_dir = coco
    out = tmp_path / "trained"
    result = run_cli("toy", "train", "--coco", path, "--images", images_dir, "--filter", "beach,mountain",
                     "--encoder", encoder_file, "--size", 32, "--scale", 0.001, "--device", "cpu", "--out", out,
                     "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "16 tokens each" in result.stdout
    _, meta = load_weights("transformer", out)
    assert meta["image_tokens"] == 16 and meta["keywords"] == ["beach", "mountain"]


@pytest.mark.parametrize("args,pattern", [
    (["--coco", "{path}", "--images", "{tmp}/missing"], "images folder"),
    (["--coco", "{path}"], "--coco needs --images"),
    (["--coco", "{path}", "--images", "{images}", "--size", "30"], "multiple of 8"),
    (["--coco", "{path}", "--images", "{images}", "--filter", " , "], "names no word"),
    (["--coco", "{path}", "--images", "{images}", "--encoder", "{tmp}/none.pkl"], "no such dvae weight file"),
    (["--coco", "{path}", "--images", "{images}", "--filter", "volcano"], "containing any of: volcano"),
    (["--images", "{images}"], "--images is for training on a caption set: it needs --coco"),
])
def test_cli_bad_caption_set_arguments(coco, tmp_path, capsys, args, pattern):
    """In-process through main(), the console entry point: one stderr line, exit 2, nothing written."""
    from clipdraw.cli import main

    path, images_dir = coco
    args = [a.format(path=path, images=images_dir, tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as info:
        main(["toy", "train", *args, "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and pattern in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("name", [None, "openai", "openai-encoder"])
def test_the_encoder_names_mean_the_encoder_as_in_generate(coco, tmp_path, monkeypatch, capsys, name):
    """Offline with an empty cache, each name asks for OpenAI's encoder.pkl (never its decoder)."""
    from clipdraw.cli import main

    monkeypatch.setenv("CLIPDRAW_CACHE", str(tmp_path / "cache"))
    path, images_dir = coco
    chosen = [] if name is None else ["--encoder", name]
    with pytest.raises(SystemExit) as info:
        main(["toy", "train", "--coco", str(path), "--images", str(images_dir), *chosen, "--offline",
              "--device", "cpu", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "encoder.pkl" in err and "decoder.pkl" not in err


def test_a_coco_transformer_draws_through_the_real_decoder_path(coco, tiny_files, tmp_path):
    """The trained transformer samples a token grid the (tiny, pickled) openai-format decoder draws:
    one frame per grid row, final.png at the training size, the same outputs as any run."""
    path, images_dir = coco
    encoder = tiny_models.save_tiny_encoder(tmp_path / "encoder512.pkl", vocab_size=512)   # the tiny decoder's vocabulary
    trained = tmp_path / "coco-transformer"
    train_coco(path, images_dir, ["beach"], str(encoder), out=trained, config=TrainConfig(gpt_steps=2, gpt_batch=4),
               device="cpu", progress=False, size=32, cache_dir=tmp_path / "cache")
    runs = tmp_path / "runs"
    common = ["--engine", "transformer", "--clip-model", tiny_files["clip"], "--decoder", tiny_files["decoder"],
              "--offline", "--quiet", "--out", runs]
    result = run_cli("a sandy beach", "--transformer", trained, "--seed", 4, *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = runs / "a-sandy-beach-4"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["engine"] == "transformer" and record["iterations_done"] == 16
    assert len(list(run_dir.glob("frame_*.png"))) == 4          # 4x4 tokens: a frame per row
    assert Image.open(run_dir / "final.png").size == (32, 32)

    # The shipped toy transformer draws 128 codes: with this 512-code decoder it is refused before any output.
    from clipdraw.toy.models import weights_dir
    result = run_cli("a sandy beach", "--transformer", weights_dir(), *common, cwd=tmp_path)
    assert result.returncode == 2 and "128 dVAE codes but the decoder has 512" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in runs.iterdir()) == ["a-sandy-beach-4"]
