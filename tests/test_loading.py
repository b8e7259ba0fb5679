"""Loading weights: both pickle formats, old pickles, refusal of foreign code, sizes read from the model."""

from __future__ import annotations

import os
from collections import OrderedDict

import pytest
import torch

from clipdraw import ClipdrawError
from clipdraw.dvae import DVAEDecoder
from clipdraw.config import clip_model_names
from clipdraw.models import ClipEnsemble, ClipModel, load_clip, load_models
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


def test_several_clip_models_guide_together_as_the_mean_of_their_cosines(tiny_files, tmp_path):
    other = tiny_models.save_tiny_clip(tmp_path / "other-clip.pt", seed=1)
    models = load_models(f"{tiny_files['clip']}, {other}", str(tiny_files["decoder"]), device="cpu")
    assert isinstance(models.clip, ClipEnsemble) and len(models.clip.members) == 2
    assert [m["path"] for m in models.info["clip"]["members"]] == [str(tiny_files["clip"]), str(other)]
    images, texts = torch.rand(3, 3, 32, 32), ["a red circle", "a blue square"]
    joint = models.clip.encode_image(images) @ models.clip.encode_text(texts).T
    each = [m.encode_image(images) @ m.encode_text(texts).T for m in models.clip.members]
    assert torch.allclose(models.clip.encode_image(images).norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(joint, (each[0] + each[1]) / 2, atol=1e-5)
    assert not torch.allclose(each[0], each[1], atol=1e-3)   # two different CLIPs, not one twice
    alone, info = load_clip(f"{tiny_files['clip']},{other}", device="cpu")   # dalle-mini's scorer, the same way
    assert isinstance(alone, ClipEnsemble) and info["members"] == models.info["clip"]["members"]
    assert torch.allclose(alone.encode_image(images) @ alone.encode_text(texts).T, joint, atol=1e-6)


def test_an_ensemble_names_each_clip_once_and_refuses_a_bad_one_before_loading(tiny_files, tmp_path):
    assert clip_model_names(" ViT-B/32 ,ViT-B/16,ViT-B/32") == ["ViT-B/32", "ViT-B/16"]
    with pytest.raises(ClipdrawError, match="names no CLIP"):
        clip_model_names(" , ")
    with pytest.raises(ClipdrawError, match="unknown CLIP model 'ViT-Z/99'"):
        load_models(f"{tiny_files['clip']},ViT-Z/99", str(tiny_files["decoder"]), device="cpu")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    one = load_models(f"{tiny_files['clip']},{tiny_files['clip']}", str(tiny_files["decoder"]), device="cpu")
    assert isinstance(one.clip, ClipModel)   # the same CLIP twice is one CLIP
