"""Loading weights: both pickle formats, old pickles, refusal of foreign code, sizes read from the model."""

from __future__ import annotations

import os
from collections import OrderedDict

import pytest
import torch

from clipdraw import ClipdrawError
from clipdraw.dvae import DVAEDecoder
from clipdraw.models import ClipModel, load_models
from clipdraw.weights import load_clip_module, load_dvae_module, resolve

import tiny_models


@pytest.mark.parametrize("variant", ["decoder", "decoder_legacy", "decoder_old"])
def test_decoder_pickles_load_and_match_the_original(tiny_files, variant):
    loaded = load_dvae_module(tiny_files[variant])
    original = tiny_models.make_tiny_decoder(seed=0)
    tokens = torch.softmax(torch.randn(1, 512, 2, 2), dim=1)
    assert torch.equal(loaded(tokens), original(tokens))


def test_old_upsample_pickles_are_mended_even_where_torch_does_not(tiny_files, monkeypatch):
    # Recent torch mends Upsample in __setstate__; older 2.x releases did not. Simulate those.
    monkeypatch.setattr(torch.nn.Upsample, "__setstate__", torch.nn.Module.__setstate__)
    with open(tiny_files["decoder_old"], "rb") as f:
        raw = torch.load(f, weights_only=False)
    upsamples = [m for m in raw.modules() if isinstance(m, torch.nn.Upsample)]
    assert upsamples and not any("recompute_scale_factor" in m.__dict__ for m in upsamples)
    with pytest.raises(AttributeError):
        raw(torch.zeros(1, 512, 2, 2))
    mended = load_dvae_module(tiny_files["decoder_old"])
    assert mended(torch.zeros(1, 512, 2, 2)).shape == (1, 6, 16, 16)


class _RunsCode:
    """Unpickling this would call os.system: the classic malicious pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "decoder.pkl"
    torch.save({"payload": _RunsCode(marker)}, path, _use_new_zipfile_serialization=not legacy)
    # Sanity: the file really would run code if loaded the unsafe way.
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ClipdrawError, match=r"refusing to load .*(posix|os)\.system"):
        load_dvae_module(path)
    assert not marker.exists()


def test_other_modules_and_plain_state_dicts_are_not_decoders(tmp_path):
    linear = tmp_path / "linear.pkl"
    torch.save(torch.nn.Linear(2, 2), linear)
    with pytest.raises(ClipdrawError, match="refusing"):
        load_dvae_module(linear)
    state = tmp_path / "state.pkl"
    torch.save(OrderedDict(w=torch.zeros(2)), state)
    with pytest.raises(ClipdrawError, match="not a dall_e Decoder"):
        load_dvae_module(state)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_decoder_files_give_one_clear_error(tiny_files, tmp_path, damage):
    data = tiny_files["decoder"].read_bytes()
    path = tmp_path / "decoder.pkl"
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    with pytest.raises(ClipdrawError, match="corrupt or not a torch file") as info:
        load_dvae_module(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("variant", ["clip", "clip_jit"])
def test_clip_checkpoints_load_through_clip_load(tiny_files, variant):
    model = load_clip_module(tiny_files[variant])
    reference = tiny_models.make_tiny_clip(seed=0)
    image = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model.encode_image(image), reference.encode_image(image), atol=1e-3)


def test_damaged_or_wrong_clip_files_are_refused(tiny_files, tmp_path):
    truncated = tmp_path / "clip.pt"
    truncated.write_bytes(tiny_files["clip"].read_bytes()[:1000])
    with pytest.raises(ClipdrawError, match="not a CLIP checkpoint"):
        load_clip_module(truncated)
    with pytest.raises(ClipdrawError, match="not a CLIP checkpoint"):
        load_clip_module(tiny_files["decoder"])


def test_sizes_come_from_the_loaded_models(tiny_models_cpu):
    assert tiny_models_cpu.decoder.vocab_size == 512
    assert tiny_models_cpu.decoder.upsample_factor == 8
    assert tiny_models_cpu.clip.input_resolution == 32
    assert all(not p.requires_grad for p in tiny_models_cpu.decoder.parameters())
    assert all(not p.requires_grad for p in tiny_models_cpu.clip.parameters())


def test_wrappers_produce_images_and_unit_embeddings(tiny_models_cpu):
    tokens = torch.softmax(torch.randn(2, 512, 4, 4), dim=1)
    image = tiny_models_cpu.decoder(tokens)
    assert image.shape == (2, 3, 32, 32) and image.min() >= 0 and image.max() <= 1
    embeds = tiny_models_cpu.clip.encode_image(torch.rand(3, 3, 48, 48))   # resized to 32 inside
    assert embeds.shape == (3, 32)
    assert torch.allclose(embeds.norm(dim=-1), torch.ones(3), atol=1e-5)
    text = tiny_models_cpu.clip.encode_text(["a red circle", "a blue square"])
    assert text.shape == (2, 32) and not torch.allclose(text[0], text[1])


def test_names_and_paths(tmp_path):
    with pytest.raises(ClipdrawError, match="unknown CLIP model 'ViT-Z/99'.*ViT-B/32"):
        resolve("ViT-Z/99", "clip")
    with pytest.raises(ClipdrawError, match="unknown dVAE 'nope'"):
        resolve("nope", "dvae")
    with pytest.raises(ClipdrawError, match="no such dvae weight file"):
        resolve(str(tmp_path / "missing" / "decoder.pkl"), "dvae")
    with pytest.raises(ClipdrawError, match="not a regular file"):
        resolve(str(tmp_path), "clip")


def test_offline_without_cache_names_url_and_path(tmp_path):
    with pytest.raises(ClipdrawError) as info:
        load_models("ViT-B/32", "openai", device="cpu", offline=True)
    message = str(info.value)
    assert "https://cdn.openai.com/dall-e/decoder.pkl" in message
    assert str(tmp_path / "cache" / "dvae-decoder.pkl") in message
    assert not any((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else True


def test_decoder_and_clip_wrappers_reject_nothing_silently(tiny_files):
    decoder = DVAEDecoder(tiny_models.make_tiny_decoder())
    with pytest.raises(ValueError):
        decoder(torch.zeros(1, 100, 2, 2))   # wrong vocabulary: dall_e's own check still applies
    clip = ClipModel(tiny_models.make_tiny_clip())
    assert clip.context_length == 77
