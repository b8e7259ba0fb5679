"""The dVAE package's own surface: one decode call for every path, one vocabulary softmax, and
the private torch op it borrows, checked against what it stands for."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipdraw.dvae import (DVAEDecoder, InputConv, relaxed_tokens, softmax_backward, softmax_over_vocabulary,
                           straight_through)
from clipdraw.errors import InputError

import tiny_models


def scores_for(decoder: DVAEDecoder, seed: int = 0) -> torch.Tensor:
    scores = torch.randn(2, decoder.vocab_size, 4, 4, generator=torch.Generator().manual_seed(seed))
    return scores.contiguous(memory_format=torch.channels_last).requires_grad_(True)


def image_and_grad(decode, scores: torch.Tensor):
    image = decode(scores)
    (image * torch.linspace(-1, 1, image.numel()).view_as(image)).sum().backward()
    return image.detach(), scores.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dim", [-1, 1])
def test_softmax_backward_is_autograds_softmax_backward(dtype, dim):
    """Fails if torch changes its private op: the low-memory backward would then drift from autograd's."""
    x = torch.randn(2, 64, 3, 5, generator=torch.Generator().manual_seed(0)).to(dtype).requires_grad_(True)
    probs = torch.softmax(x, dim=dim)
    grad = torch.randn(probs.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    expected, = torch.autograd.grad(probs, x, grad)
    got = softmax_backward(grad, probs.detach(), dim)
    assert got.dtype == dtype and torch.equal(got, expected)


def test_the_vocabulary_softmax_in_either_layout():
    scores = torch.randn(2, 32, 3, 5, generator=torch.Generator().manual_seed(0))
    last = softmax_over_vocabulary(scores.contiguous(memory_format=torch.channels_last), 0.5)
    plain = softmax_over_vocabulary(scores, 0.5, vocabulary_last=False)
    assert last.is_contiguous(memory_format=torch.channels_last) and plain.is_contiguous()
    assert torch.equal(plain, F.softmax(scores / 0.5, dim=1))
    torch.testing.assert_close(last, plain, atol=0, rtol=1e-6)   # the same function, two kernels
    assert torch.allclose(last.sum(1), torch.ones(2, 3, 5))


def test_straight_through_is_one_hot_forward():
    soft = softmax_over_vocabulary(torch.randn(1, 8, 2, 2))
    hard = straight_through(soft)
    assert torch.allclose(hard, F.one_hot(soft.argmax(1), 8).permute(0, 3, 1, 2).float(), atol=1e-6)


@pytest.mark.parametrize("relaxation", ["softmax", "straight-through"])
@pytest.mark.parametrize("low_memory", [False, True])
def test_decode_is_the_relaxation_then_the_decoder(relaxation, low_memory):
    """Bit for bit the old two-step path: the relaxed tokens, then ``forward`` (the low-memory
    softmax, by bands from the scores, the same arithmetic per pixel)."""
    decoder = DVAEDecoder(tiny_models.make_tiny_decoder())
    got = image_and_grad(lambda s: decoder.decode(s, 0.7, relaxation, low_memory=low_memory), scores_for(decoder))
    expected = image_and_grad(lambda s: decoder(relaxed_tokens(s, 0.7, relaxation), low_memory=low_memory),
                              scores_for(decoder))
    assert torch.equal(got[0], expected[0])
    if low_memory and relaxation == "softmax":   # the softmax's backward by bands: its own kernel shapes
        torch.testing.assert_close(got[1], expected[1], atol=1e-6 * expected[1].abs().max().item(), rtol=1e-5)
    else:
        assert torch.equal(got[1], expected[1])


def test_decode_refuses_an_unknown_relaxation():
    decoder = DVAEDecoder(tiny_models.make_tiny_decoder())
    with pytest.raises(InputError, match="straight-through"):
        decoder.decode(scores_for(decoder), 1.0, "gumbel")


def test_the_input_stage_takes_scores_itself():
    decoder = DVAEDecoder(tiny_models.make_tiny_decoder())
    first = decoder.stages[0]
    assert isinstance(first, InputConv) and first.takes_scores and decoder.fuses_softmax
    scores = scores_for(decoder).detach()
    with torch.no_grad():
        assert torch.equal(first.forward_from_scores(scores, 0.7), first(softmax_over_vocabulary(scores, 0.7)))


@pytest.mark.skipif(not tiny_models.dynamo_works(), reason="torch.compile is not supported here")
def test_compiled_decode_compiles_the_decoder_but_not_its_low_memory_path():
    import torch._dynamo
    from torch._dynamo.utils import counters

    decoder = DVAEDecoder(tiny_models.make_tiny_decoder())
    torch._dynamo.reset()
    counters.clear()
    plain = image_and_grad(lambda s: decoder.decode(s, 0.7), scores_for(decoder))
    compiled = image_and_grad(lambda s: decoder.decode(s, 0.7, compiler="aot_eager"), scores_for(decoder))
    assert counters["stats"]["unique_graphs"] == 1 and decoder.compiled("aot_eager") is decoder.compiled("aot_eager")
    torch.testing.assert_close(compiled, plain, atol=1e-6, rtol=1e-5)
    low = image_and_grad(lambda s: decoder.decode(s, 0.7, low_memory=True), scores_for(decoder))
    both = image_and_grad(lambda s: decoder.decode(s, 0.7, low_memory=True, compiler="aot_eager"), scores_for(decoder))
    assert counters["stats"]["unique_graphs"] == 1   # nothing more was compiled ...
    assert torch.equal(both[0], low[0]) and torch.equal(both[1], low[1])   # ... and it ran the low-memory path
    torch._dynamo.reset()
