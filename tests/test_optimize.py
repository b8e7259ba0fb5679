"""The optimization loop and its stages, on tiny real-architecture models."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipdraw import ClipdrawError, GenerationConfig, generate
from clipdraw.augment import AUGMENTATIONS, Cutouts
from clipdraw.config import AUGMENTATION_NAMES, parse_augmentations
from clipdraw.optimize import relax
from clipdraw.prompts import Prompt, parse_prompts
from clipdraw.targets import Targets

FAST = dict(size=32, cutn=4, save_every=10)


def test_prompt_weights_negatives_and_colons():
    assert parse_prompts("a tree|a house:0.5|blurry:-1") == [
        Prompt("a tree", 1.0), Prompt("a house", 0.5), Prompt("blurry", -1.0)]
    assert parse_prompts("photo: a cat") == [Prompt("photo: a cat", 1.0)]
    assert parse_prompts("  a   red\tapple :2 ") == [Prompt("a red apple", 2.0)]
    for bad in ["", "   ", "a cat||a dog", "ugly:-1", "a|:3"]:
        with pytest.raises(ClipdrawError):
            parse_prompts(bad)


def test_relaxations_normalise_over_the_vocabulary_axis():
    config = GenerationConfig(iters=10, relaxation="softmax")
    logits = torch.randn(1, 16, 3, 5)
    generator = torch.Generator().manual_seed(0)
    for relaxation in ("softmax", "gumbel", "straight-through"):
        config.relaxation = relaxation
        probs = relax(logits, config, 0, generator)
        assert probs.shape == logits.shape
        assert torch.allclose(probs.sum(dim=1), torch.ones(1, 3, 5), atol=1e-5)
    # The notebooks' bug normalises over the flattened spatial axis instead: not what we do.
    scrambled = F.softmax(logits.view(1, 16, -1), dim=-1).view_as(logits)
    config.relaxation = "softmax"
    assert not torch.allclose(relax(logits, config, 0, generator), scrambled)


def test_gumbel_anneals_and_is_reproducible():
    config = GenerationConfig(iters=100, relaxation="gumbel", tau=1.0, tau_end=0.1)
    logits = torch.randn(1, 16, 4, 4)
    early = relax(logits, config, 0, torch.Generator(), noisy=False)
    late = relax(logits, config, 99, torch.Generator(), noisy=False)
    assert late.max(dim=1).values.mean() > early.max(dim=1).values.mean() + 0.1
    a = relax(logits, config, 5, torch.Generator().manual_seed(3))
    b = relax(logits, config, 5, torch.Generator().manual_seed(3))
    c = relax(logits, config, 5, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_straight_through_is_one_hot_forward_with_soft_gradient():
    config = GenerationConfig(iters=10, relaxation="straight-through")
    logits = torch.randn(1, 8, 2, 2, requires_grad=True)
    tokens = relax(logits, config, 0, torch.Generator())
    one_hot = F.one_hot(logits.argmax(dim=1), 8).permute(0, 3, 1, 2).float()
    assert torch.allclose(tokens.detach(), one_hot, atol=1e-6)   # exact up to float rounding
    (tokens * torch.arange(8.0).view(1, 8, 1, 1)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_prompt_loss_matches_hand_computation():
    image = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    text = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    weights = torch.tensor([1.0, -0.5])
    targets = Targets(text, weights, text[:1], weights[:1])
    loss, similarity = targets.loss(image, "cosine"), targets.similarity(image).mean(-1)
    # mean cos with text 0: (1 + 0.6) / 2 = 0.8; with text 1: (0 + 0.8) / 2 = 0.4
    assert loss.item() == pytest.approx(-0.8 * 1.0 + -0.4 * -0.5)
    assert similarity.item() == pytest.approx(0.8)
    single = Targets(text[1:], torch.tensor([1.0]), text[1:], torch.tensor([1.0]))
    assert single.loss(image[:1], "spherical").item() == pytest.approx(2 * (math.pi / 4) ** 2)   # a quarter turn
    # an edit's direction: the views' move from the origin, against the text difference
    edit = Targets(text[:0], weights[:0], text[:1], weights[:1], origin=text[0], direction=text[1], direction_weight=2.0)
    moved = F.normalize(torch.tensor([[0.0, 1.0]]) - text[0], dim=-1)          # (-1, 1) / sqrt 2
    assert edit.loss(torch.tensor([[0.0, 1.0]]), "cosine").item() == pytest.approx(2 * (1 - moved[0, 1].item()))


def test_cutouts_without_augmentation_are_resized_crops():
    image = torch.rand(2, 3, 40, 40)
    cutouts = Cutouts(cut_size=20, cutn=3, min_scale=1.0)
    views = cutouts(image)
    assert views.shape == (6, 3, 20, 20)
    expected = F.interpolate(image, size=(20, 20), mode="bilinear", align_corners=False)
    assert torch.allclose(views[0], expected[0], atol=1e-5) and torch.allclose(views[3], expected[1], atol=1e-5)
    augmented = Cutouts(20, 8, 0.5, parse_augmentations("affine,perspective,jitter,noise,flip"))(image)
    assert augmented.shape == (16, 3, 20, 20) and augmented.min() >= 0 and augmented.max() <= 1
    with pytest.raises(ClipdrawError, match="unknown augmentation 'blur'"):
        parse_augmentations("affine,blur")
    assert parse_augmentations("none") == ()
    assert tuple(AUGMENTATIONS) == AUGMENTATION_NAMES   # the torch-free list of names matches the builders


def test_loss_falls_and_similarity_rises(tiny_models_cpu):
    result = generate(tiny_models_cpu, "a red circle", GenerationConfig(iters=40, seed=0, lr=0.3, **FAST),
                      progress=False)
    assert len(result.losses) == 40 and result.iterations_done == 40
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10]) - 0.005
    assert result.frames[-1].similarity > result.frames[0].similarity


@pytest.mark.parametrize("relaxation,loss", [("gumbel", "cosine"), ("straight-through", "spherical")])
def test_other_relaxations_and_losses_also_optimize(tiny_models_cpu, relaxation, loss):
    config = GenerationConfig(iters=30, seed=0, lr=0.3, relaxation=relaxation, loss=loss, augmentations="none",
                              lr_schedule="cosine", **FAST)
    result = generate(tiny_models_cpu, "a blue square", config, progress=False)
    assert np.mean(result.losses[-8:]) < np.mean(result.losses[:8])


def test_same_seed_same_image_other_seed_other_image(tiny_models_cpu):
    runs = [generate(tiny_models_cpu, "a tree|fog:-0.5", GenerationConfig(iters=12, seed=s, **FAST), progress=False)
            for s in (7, 7, 8)]
    first, again, other = (np.asarray(r.image) for r in runs)
    assert np.array_equal(first, again) and runs[0].losses == runs[1].losses
    assert not np.array_equal(first, other)


def test_frames_are_reported_every_save_every_and_at_the_end(tiny_models_cpu):
    seen = []
    result = generate(tiny_models_cpu, "a cat", GenerationConfig(iters=23, seed=0, size=32, cutn=2, save_every=10),
                      on_frame=seen.append, progress=False)
    assert [f.iteration for f in result.frames] == [10, 20, 23] == [f.iteration for f in seen]
    assert result.image.size == (32, 32) and result.image is result.frames[-1].image


def test_models_stay_frozen_and_caller_rng_untouched(tiny_models_cpu):
    before = [p.clone() for p in tiny_models_cpu.clip.parameters()][:3]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    generate(tiny_models_cpu, "a dog", GenerationConfig(iters=3, seed=5, **FAST), progress=False)
    assert torch.equal(torch.rand(3), expected)
    for p, q in zip(before, tiny_models_cpu.clip.parameters()):
        assert torch.equal(p, q) and q.grad is None
    # The decoder's weights are buffers, not parameters: nothing can train them, and no gradient
    # is kept on them; gradients still flow through them to what the optimizer drives.
    decoder = tiny_models_cpu.decoder
    buffers = list(decoder.buffers())
    assert not list(decoder.parameters()) and buffers
    assert not any(b.requires_grad or b.grad is not None for b in buffers)
    grid = 32 // decoder.upsample_factor
    scores = torch.randn(1, decoder.vocab_size, grid, grid, requires_grad=True)
    decoder(torch.softmax(scores, dim=1)).sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0
    assert not any(b.grad is not None for b in buffers)


def test_ctrl_c_keeps_what_was_done(tiny_models_cpu):
    def interrupt_at_second_frame(frame):
        if frame.iteration == 4:
            raise KeyboardInterrupt

    result = generate(tiny_models_cpu, "a boat", GenerationConfig(iters=100, seed=0, size=32, cutn=2, save_every=2),
                      on_frame=interrupt_at_second_frame, progress=False)
    assert result.interrupted and result.iterations_done == 4
    assert [f.iteration for f in result.frames] == [2, 4]


def test_size_must_suit_the_decoder_and_counts_be_positive(tiny_models_cpu):
    for bad in (dict(iters=0), dict(cutn=-1), dict(size=30), dict(save_every=0), dict(lr=0), dict(loss="l2"),
                dict(relaxation="argmax"), dict(tau=0)):
        with pytest.raises(ClipdrawError):
            GenerationConfig(**bad)


def test_a_run_can_start_from_given_latents(tiny_models_cpu):
    decoder = tiny_models_cpu.decoder
    grid = 32 // decoder.upsample_factor
    tokens = torch.randint(decoder.vocab_size, (grid, grid), generator=torch.Generator().manual_seed(3))
    start = F.one_hot(tokens, decoder.vocab_size).permute(2, 0, 1).float() * 20   # nearly hard tokens
    config = GenerationConfig(iters=3, seed=0, size=32, cutn=2, save_every=1, lr=1e-6)
    result = generate(tiny_models_cpu, "a kite", config, progress=False, init_logits=start, keep_images=True)
    with torch.no_grad():
        expected = decoder.decode_tokens(tokens[None])[0]
    first = torch.from_numpy(np.array(result.frames[0].image)).permute(2, 0, 1).float() / 255
    assert (first - expected.clamp(0, 1)).abs().max() < 2 / 255   # the start is the given latents, barely moved
    random_start = generate(tiny_models_cpu, "a kite", config, progress=False, keep_images=True)
    assert not np.array_equal(np.asarray(random_start.frames[0].image), np.asarray(result.frames[0].image))
    with pytest.raises(ClipdrawError, match="initial logits"):
        generate(tiny_models_cpu, "a kite", config, progress=False, init_logits=start[:, :2])


def test_a_cpu_run_reseeds_no_cuda_device(tiny_models_cpu, monkeypatch):
    """torch.manual_seed would reseed every CUDA device (restoring none on a CPU run):
    a run seeds only the RNGs it restores."""
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(("all", seed)))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(("one", seed)))
    generate(tiny_models_cpu, "a dog", GenerationConfig(iters=2, seed=5, **FAST), progress=False)
    assert calls == []


def test_seeded_rng_seeds_and_restores_the_one_cuda_device(monkeypatch):
    """On cuda:1, the RNG of device 1 alone is seeded, and it is the one restored; no other
    device is touched (checked with torch.cuda's RNG functions recorded, no GPU needed)."""
    from clipdraw.optimize import seeded_rng

    current, seeded, saved, restored = [0], [], [], []

    @contextlib.contextmanager
    def on_device(index):
        before, current[0] = current[0], index
        try:
            yield
        finally:
            current[0] = before

    monkeypatch.setattr(torch.cuda, "device", on_device)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: seeded.append((current[0], seed)))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: seeded.append(("all", seed)))
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": saved.append(device) or torch.zeros(1))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append(device))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    seeded.clear()   # torch.manual_seed itself seeds every device: only what seeded_rng does counts
    with seeded_rng(torch.device("cuda", 1), 9):
        inside = torch.rand(3)
    during = list(seeded)
    assert torch.equal(torch.rand(3), expected)                      # the CPU RNG restored
    torch.manual_seed(9)
    assert torch.equal(inside, torch.rand(3))                         # and seeded as torch.manual_seed(9) seeds it
    assert during == [(1, 9)] and saved == restored == [1]
