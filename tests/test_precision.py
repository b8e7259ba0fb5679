"""The precision paths a GPU takes, run on the CPU: the choice rests on a dtype, not a device.

Tolerances against float32 (tiny decoder, random token probabilities; pixels in [0, 1]):
float16 weights agree to 2e-3 in the pixels and bfloat16 to 2e-2 (8 bits of mantissa against
11); the hand-written low-memory backward in half precision agrees with autograd's backward
through the same half-precision decoder to 1e-3 of the largest gradient in float16 and 5e-3
in bfloat16 (the same operations, summed in other orders), and with the float32
gradient to 3e-2 of it (float16) or 1.5e-1 (bfloat16).
"""

from __future__ import annotations

import copy

import pytest
import torch

from clipdraw import GenerationConfig
from clipdraw.device import resolve_precision
from clipdraw.errors import ClipdrawError
from clipdraw.dvae import DVAEDecoder, HeldConv2d, low_memory
from clipdraw.models import load_models
from clipdraw.optimize import Optimization, clip_autocast_dtype
from clipdraw.prompts import parse_schedule

import tiny_models

PIXEL_TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 2e-2}
GRAD_TOLERANCE = {torch.float16: 3e-2, torch.bfloat16: 1.5e-1}
HAND_TOLERANCE = {torch.float16: 1e-3, torch.bfloat16: 5e-3}
HALVES = [torch.float16, torch.bfloat16]


def held_dtypes(decoder: DVAEDecoder):
    return [conv.w.dtype for conv in decoder.modules() if isinstance(conv, HeldConv2d)]


def decode_with_grad(decoder: DVAEDecoder, low: bool, seed: int = 3):
    logits = torch.randn(2, decoder.vocab_size, 4, 4, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    image = decoder.decode(logits, 0.8, low_memory=low)
    (image * torch.linspace(-1, 1, image.numel()).view_as(image)).sum().backward()
    return image.detach(), logits.grad


@pytest.mark.parametrize("dtype", HALVES)
def test_half_precision_decoder_weights_on_cpu(dtype):
    full = DVAEDecoder(tiny_models.make_tiny_decoder())
    half = DVAEDecoder(copy.deepcopy(tiny_models.make_tiny_decoder())).set_precision(dtype)
    dtypes = held_dtypes(half)
    assert dtypes[0] == torch.float32 and set(dtypes[1:]) == {dtype}   # as dall_e: the input conv stays fp32
    assert half.compute_dtype == dtype and full.compute_dtype == torch.float32
    half.to("cpu")   # moving keeps the precision asked for: the device does not decide
    assert held_dtypes(half) == dtypes
    probabilities = torch.softmax(torch.randn(2, full.vocab_size, 4, 4, generator=torch.Generator().manual_seed(0)), 1)
    with torch.no_grad():
        expected, got = full(probabilities), half(probabilities)
    assert got.dtype == torch.float32   # pixels always come back in float32
    torch.testing.assert_close(got, expected, atol=PIXEL_TOLERANCE[dtype], rtol=0)
    assert (got - expected).abs().max() > 0   # it did compute in half precision
    half.set_precision(None)
    assert set(held_dtypes(half)) == {torch.float32}   # auto on a CPU: float32


@pytest.mark.parametrize("dtype", HALVES)
@pytest.mark.parametrize("pack_with_numpy", [True, False])   # False: the torch bit-packing CUDA uses
def test_half_precision_hand_backward_on_cpu(dtype, pack_with_numpy, monkeypatch):
    monkeypatch.setattr(low_memory, "_numpy_way", lambda tensor, use_numpy: pack_with_numpy)
    _, full_grad = decode_with_grad(DVAEDecoder(tiny_models.make_tiny_decoder()), low=False)
    half = DVAEDecoder(tiny_models.make_tiny_decoder()).set_precision(dtype)
    autograd_image, autograd_grad = decode_with_grad(half, low=False)
    hand_image, hand_grad = decode_with_grad(half, low=True)
    scale = full_grad.abs().max().item()
    assert hand_grad.dtype == torch.float32 and torch.isfinite(hand_grad).all()
    torch.testing.assert_close(hand_image, autograd_image, atol=PIXEL_TOLERANCE[dtype], rtol=0)
    torch.testing.assert_close(hand_grad, autograd_grad, atol=HAND_TOLERANCE[dtype] * scale, rtol=0)
    torch.testing.assert_close(hand_grad, full_grad, atol=GRAD_TOLERANCE[dtype] * scale, rtol=0)


def test_precision_names_and_the_autocast_they_give():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_precision("auto") is None and resolve_precision("bfloat16") is torch.bfloat16
    with pytest.raises(ClipdrawError, match="unknown precision 'half'"):
        resolve_precision("half")
    assert clip_autocast_dtype(cpu) is None and clip_autocast_dtype(cuda) == torch.float16
    assert clip_autocast_dtype(cpu, torch.float16) == torch.float16
    assert clip_autocast_dtype(cuda, torch.float32) is None   # full precision on a GPU when asked


@pytest.mark.parametrize("dtype", HALVES)
def test_clip_runs_under_autocast_on_cpu_when_asked(tiny_files, dtype):
    models = load_models(str(tiny_files["clip"]), str(tiny_files["decoder"]), device="cpu", precision=str(dtype)[6:])
    assert models.precision == dtype and models.decoder.compute_dtype == dtype
    seen = []
    linear = next(m for name, m in models.clip.model.visual.named_modules() if name.endswith("mlp.c_fc"))
    handle = linear.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    config = GenerationConfig(iters=3, size=32, cutn=4, seed=0)
    try:
        torch.manual_seed(0)
        run = Optimization(models, parse_schedule("a cat"), config)
        start = run.logits.detach().clone()
        loss, similarity = run.step(1)
    finally:
        handle.remove()
    assert seen and set(seen) == {dtype}   # CLIP's image tower computed in the asked dtype
    assert torch.isfinite(loss).all() and similarity.dtype == torch.float32
    assert not torch.equal(run.logits.detach(), start)   # a step was taken
    full = load_models(str(tiny_files["clip"]), str(tiny_files["decoder"]), device="cpu", precision="float32")
    torch.manual_seed(0)
    full_loss, _ = Optimization(full, parse_schedule("a cat"), config).step(1)
    torch.testing.assert_close(loss, full_loss, atol=5e-2, rtol=0)   # same run, lower precision
