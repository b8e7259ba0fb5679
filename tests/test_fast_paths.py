"""Every fast path agrees with the plain one, on tiny real-architecture models.

Tolerances: the regrouped decoder (weights held once, channels-last, 1x1 convolutions before
the upsampling, residual sums in place) agrees with dall_e's own forward to 1e-6 in the pixels
(channels-last sums in another order); --low-memory, which runs the decoder by bands of rows
and its backward by hand, agrees to 1e-6 in the pixels and 1e-5 relative in the gradients (the
same operations, other kernel shapes); a batch agrees with its images run alone to 1e-5 in the
losses and 1e-4 in the latents after 8 Adam steps of 0.1 (same arithmetic in other matrix shapes: rounding differs, and Adam's
normalisation lets it through); --compile to 1e-4 in the losses (a compiler may fuse and
reorder float operations).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from clipdraw import GenerationConfig, generate
import torch.nn.functional as F

from clipdraw.dvae import DVAEDecoder, HeldConv2d, ResidualBlock, UpsampledBlock, low_memory, run_stages
from clipdraw.dvae.low_memory import ReluMasks, pack_bits, unpack_bits
from clipdraw.models import ClipModel
from clipdraw.optimize import Optimization, clip_autocast_dtype, generate_batch
from clipdraw.prompts import parse_schedule

import tiny_models

FAST = dict(size=32, cutn=4, save_every=10)
DETERMINISTIC_VIEWS = dict(cut_min_scale=1.0, augmentations="none")   # every cutout is the whole image
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def tokens_and_logits(vocab: int = 512, batch: int = 2, grid: int = 4, seed: int = 0):
    logits = torch.randn(batch, vocab, grid, grid, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    return logits, lambda: torch.softmax(logits, dim=1)


def test_decoder_matches_dall_e_forward_and_keeps_its_state_dict():
    reference = tiny_models.make_tiny_decoder()
    decoder = DVAEDecoder(copy.deepcopy(reference))
    assert not any(type(m).__name__ == "Conv2d" for m in decoder.modules())   # all became HeldConv2d
    assert sum(isinstance(m, HeldConv2d) for m in decoder.modules()) == sum(
        type(m).__name__ == "Conv2d" for m in reference.modules())
    assert sum(isinstance(s, UpsampledBlock) for s in decoder.stages) == 3
    blocks = sum(type(m).__name__ == "DecoderBlock" for m in reference.modules())
    assert sum(isinstance(s, ResidualBlock) for s in decoder.stages) == blocks - 3 > 0   # the others in place
    assert list(decoder.decoder.state_dict()) == list(reference.state_dict())
    outputs, grads = [], []
    for forward in (reference, lambda t: run_stages(decoder.stages, t)):
        logits, tokens = tokens_and_logits()
        out = torch.sigmoid(forward(tokens())[:, :3])
        (out * torch.linspace(0, 1, out.numel()).view_as(out)).sum().backward()   # in-place sums keep gradients whole
        outputs.append(out.detach())
        grads.append(logits.grad)
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-4)


def saved_for_backward_bytes(forward, tokens: torch.Tensor, weights: torch.nn.Module) -> int:
    """Bytes of the distinct storages autograd keeps for backward through ``forward(tokens)``,
    the weights' (kept either way) left out."""
    kept = {}
    held = {t.untyped_storage().data_ptr() for t in [*weights.buffers(), *weights.parameters()]}

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in held:
            kept[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward(tokens)
    return sum(kept.values())


def low_memory_node(image: torch.Tensor):
    """The low-memory decoder's node in ``image``'s graph (a custom Function's node is its ctx)."""
    pending, seen = [image.grad_fn], set()
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "_DecodeKeepingMasksBackward":
            return node
        pending.extend(next_node for next_node, _ in node.next_functions)
    return None


def test_low_memory_decoder_keeps_one_bit_per_relu_value_and_nothing_else():
    decoder = DVAEDecoder(tiny_models.make_tiny_decoder())
    assert decoder.keeps_masks and decoder.fuses_softmax
    _, tokens = tokens_and_logits(batch=1, grid=8)
    plain = saved_for_backward_bytes(decoder, tokens(), decoder)
    relu_inputs = []   # every ReLU input of a plain forward, counted by a hook on the functional call
    original_relu = F.relu
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(F, "relu", lambda x, inplace=False: relu_inputs.append(x.numel()) or original_relu(x, inplace))
        with torch.no_grad():
            decoder(tokens())
    kept, images = [], []
    low = saved_for_backward_bytes(lambda t: images.append(decoder(t, low_memory=True)), tokens(), decoder)
    kept.append(low_memory_node(images[0]))
    assert low == 2 * images[0].numel() * 4   # autograd keeps only the pixels' sigmoid and clamp; the node, the masks
    masks = kept[0].masks
    assert len(masks) == len(relu_inputs) > 10
    assert masks.nbytes == sum((n + 7) // 8 for n in relu_inputs)      # one bit per value
    assert plain > 40 * masks.nbytes   # autograd keeps float relu outputs (and more): 32 bits a value
    assert saved_for_backward_bytes(decoder, tokens(), decoder) == plain   # a plain call afterwards keeps it all


@pytest.mark.parametrize("use_numpy", [True, False])
@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 16, 4, 4), (1, 1, 1, 1)])
def test_packed_masks_unpack_to_the_same_mask_in_the_same_layout(use_numpy, shape):
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    packed = pack_bits(x <= 0, use_numpy=use_numpy)
    assert packed.dtype == torch.uint8 and packed.numel() == (x.numel() + 7) // 8
    assert torch.equal(packed, pack_bits(x <= 0, use_numpy=not use_numpy))   # the two ways agree bit for bit
    mask = unpack_bits(packed, x.shape, use_numpy=use_numpy)
    assert mask.dtype == torch.bool and torch.equal(mask, x <= 0)
    assert mask.is_contiguous(memory_format=torch.channels_last) or x.numel() == shape[1]


def test_relu_masks_come_back_last_in_first_out():
    masks, tensors = ReluMasks(), [torch.randn(1, c, 3, 3) for c in (2, 5, 8)]
    for t in tensors:
        masks.keep(t)
    assert [torch.equal(masks.pop(), t <= 0) for t in reversed(tensors)] == [True] * 3 and len(masks) == 0


@pytest.mark.parametrize("band_bytes", [None, 1])   # 1: every band a single row, edges padded by hand
def test_low_memory_decoder_agrees_with_the_plain_path_by_bands(monkeypatch, band_bytes):
    if band_bytes:
        monkeypatch.setattr(low_memory, "BAND_BYTES", band_bytes)
    decoder = DVAEDecoder(tiny_models.make_tiny_decoder())
    results = []
    for low, through_scores in ((False, False), (True, False), (True, True)):
        logits = torch.randn(2, decoder.vocab_size, 6, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
        image = (decoder.decode(logits, 0.7, low_memory=low) if through_scores
                 else decoder(torch.softmax(logits / 0.7, dim=1), low_memory=low))
        assert (low_memory_node(image) is not None) == low
        (image * torch.linspace(-1, 1, image.numel()).view_as(image)).sum().backward()
        results.append((image.detach(), logits.grad))
    for image, grad in results[1:]:
        torch.testing.assert_close(image, results[0][0], atol=1e-6, rtol=0)
        scale = results[0][1].abs().max().item()   # entries near 0 differ in their last bits: tolerance relative to the largest
        torch.testing.assert_close(grad, results[0][1], atol=1e-6 * scale, rtol=1e-5)


def test_low_memory_backward_runs_once_and_leaves_the_incoming_gradient_alone():
    decoder = DVAEDecoder(tiny_models.make_tiny_decoder())
    logits, tokens = tokens_and_logits(batch=1, grid=4)
    image = decoder(tokens(), low_memory=True)
    incoming = torch.randn_like(image)
    kept = incoming.clone()
    image.backward(incoming, retain_graph=True)
    assert torch.equal(incoming, kept) and logits.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="runs once"):
        image.backward(incoming)


def test_weights_held_in_the_compute_dtype_by_device():
    decoder = DVAEDecoder(tiny_models.make_tiny_decoder())
    convs = [m for m in decoder.modules() if isinstance(m, HeldConv2d)]
    assert all(c.w.dtype == torch.float32 for c in convs)                   # the CPU computes in float32
    assert not convs[0].half_on_cuda and all(c.half_on_cuda for c in convs[1:])   # as dall_e: the input conv stays fp32
    decoder.double()   # a dtype cast cannot take the decoder out of the dtypes dall_e computes in
    assert all(c.w.dtype == torch.float32 for c in convs)


def test_low_memory_decoder_and_clip_agree_with_the_plain_path():
    decoder = DVAEDecoder(tiny_models.make_tiny_decoder())
    clip = ClipModel(tiny_models.make_tiny_clip())
    assert clip.image_blocks is not None
    results = []
    for low in (False, True):
        logits, tokens = tokens_and_logits()
        image = decoder(tokens(), low_memory=low)
        embeds = clip.encode_image(image, low_memory=low)
        (embeds[:, 0].sum() + image.mean()).backward()
        results.append((image.detach(), embeds.detach(), logits.grad))
    (plain_image, plain_embeds, plain_grad), (low_image, low_embeds, low_grad) = results
    assert torch.equal(low_image, plain_image) and torch.equal(low_embeds, plain_embeds)   # forward: the same arithmetic
    torch.testing.assert_close(low_grad, plain_grad, atol=1e-7, rtol=1e-5)   # backward: another kernel
    assert not clip.image_blocks.recompute   # switched off after the call


@pytest.mark.parametrize("relaxation", ["softmax", "gumbel", "straight-through"])   # the first two by bands
def test_low_memory_generation_agrees_with_plain(tiny_models_cpu, relaxation):
    plain, low = (generate(tiny_models_cpu, "a red circle", GenerationConfig(
        iters=6, seed=2, low_memory=flag, relaxation=relaxation, **FAST), progress=False) for flag in (False, True))
    np.testing.assert_allclose(low.losses, plain.losses, rtol=0, atol=1e-6)
    difference = np.abs(np.asarray(low.image, dtype=int) - np.asarray(plain.image, dtype=int))
    assert difference.max() <= 1 and difference.mean() < 0.01   # an 8-bit step at most, here and there


@pytest.mark.parametrize("relaxation", ["softmax", "gumbel"])
def test_a_batch_optimizes_each_image_as_if_alone(tiny_models_cpu, relaxation):
    """With deterministic views, image i of a batch from seed s follows the run of seed s + i."""
    config = GenerationConfig(iters=8, seed=11, batch=3, relaxation=relaxation, **FAST, **DETERMINISTIC_VIEWS)
    batch = generate_batch(tiny_models_cpu, "a red circle|fog:-0.5", config, progress=False)
    assert [r.config.seed for r in batch] == [11, 12, 13] and [r.batch_index for r in batch] == [0, 1, 2]
    for i, result in enumerate(batch):
        single = GenerationConfig(**{**vars(config), "seed": 11 + i, "batch": 1})
        alone = generate(tiny_models_cpu, "a red circle|fog:-0.5", single, progress=False)
        np.testing.assert_allclose(result.losses, alone.losses, atol=1e-5)
        torch.manual_seed(11 + i)
        start = Optimization(tiny_models_cpu, parse_schedule("a red circle"), single).logits.detach()
        moved_batched, moved_alone = result.latents - start, alone.latents - start
        # Batched reductions add in another order; Adam divides by sqrt(v), so where a gradient
        # is near zero that rounding can move an element by a few thousandths of lr x iters.
        # What must hold is the whole update: within 0.1% of its size (measured: 3e-4 at most).
        assert moved_alone.norm() > 0.1
        assert (moved_batched - moved_alone).norm() < 1e-3 * moved_alone.norm()


def test_batch_rows_start_from_their_seeds_latents_and_draw_their_own_cutouts(tiny_models_cpu):
    prompts = parse_schedule("a cat")
    torch.manual_seed(4)
    batch = Optimization(tiny_models_cpu, prompts, GenerationConfig(seed=4, batch=3, **FAST))
    for i in range(3):
        torch.manual_seed(4 + i)
        alone = Optimization(tiny_models_cpu, prompts, GenerationConfig(seed=4 + i, **FAST))
        assert torch.equal(batch.logits[i:i + 1], alone.logits)
    same_image = torch.rand(1, 3, 32, 32).expand(2, -1, -1, -1)
    views = batch.cutouts(same_image)
    assert views.shape[0] == 2 * batch.config.cutn and not torch.equal(views[:4], views[4:])


def test_generate_is_one_image_and_batch_frames_reach_each_image(tiny_models_cpu):
    with pytest.raises(Exception, match="generate_batch"):
        generate(tiny_models_cpu, "a cat", GenerationConfig(iters=2, batch=2, **FAST), progress=False)
    seen = []
    results = generate_batch(tiny_models_cpu, "a cat", GenerationConfig(iters=4, seed=0, batch=2, size=32, cutn=2,
                                                                        save_every=2),
                             on_frame=lambda i, frame: seen.append((i, frame.iteration)), progress=False)
    assert sorted(seen) == [(0, 2), (0, 4), (1, 2), (1, 4)]
    assert [len(r.losses) for r in results] == [4, 4] and results[0].losses != results[1].losses
    assert results[1].summary()["seed"] == 1 and results[1].summary()["batch_index"] == 1
    assert "batch_index" not in generate(tiny_models_cpu, "a cat", GenerationConfig(iters=1, **FAST),
                                         progress=False).summary()


def test_interrupting_a_batch_keeps_every_image(tiny_models_cpu):
    def interrupt(index, frame):
        if index == 0 and frame.iteration == 4:
            raise KeyboardInterrupt

    results = generate_batch(tiny_models_cpu, "a boat", GenerationConfig(iters=50, batch=2, size=32, cutn=2,
                                                                         save_every=2),
                             on_frame=interrupt, progress=False)
    assert all(r.interrupted and r.iterations_done == 4 for r in results)
    assert [[f.iteration for f in r.frames] for r in results] == [[2, 4], [2, 4]]


@pytest.mark.skipif(not tiny_models.dynamo_works(), reason="torch.compile is not supported here")
def test_compiled_step_agrees_with_plain(tiny_models_cpu, monkeypatch):
    """Dynamo traces the real models; "aot_eager" skips inductor's C++ build (a minute on 2 cores)."""
    import clipdraw.optimize

    from torch._dynamo.utils import counters

    monkeypatch.setattr(clipdraw.optimize, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    counters.clear()
    config = dict(iters=4, seed=1, **FAST, **DETERMINISTIC_VIEWS)
    plain = generate(tiny_models_cpu, "a tree", GenerationConfig(**config), progress=False)
    compiled = generate(tiny_models_cpu, "a tree", GenerationConfig(**config, compile=True), progress=False)
    assert counters["stats"]["unique_graphs"] == 2   # the decoder and CLIP's image encoder, each whole
    np.testing.assert_allclose(compiled.losses, plain.losses, atol=1e-4)
    torch._dynamo.reset()


def test_clip_autocast_only_on_cuda():
    assert clip_autocast_dtype(torch.device("cpu")) is None
    assert clip_autocast_dtype(torch.device("cuda", 0)) == torch.float16


@cuda_only
def test_cuda_decoder_holds_half_weights_and_matches_dall_e():
    reference = tiny_models.make_tiny_decoder().cuda()   # dall_e: float32 weights cast to half per call
    decoder = DVAEDecoder(copy.deepcopy(tiny_models.make_tiny_decoder())).cuda()
    convs = [m for m in decoder.modules() if isinstance(m, HeldConv2d)]
    assert convs[0].w.dtype == torch.float32 and all(c.w.dtype == torch.float16 for c in convs[1:])
    _, tokens = tokens_and_logits()
    with torch.no_grad():
        expected = ((torch.sigmoid(reference(tokens().cuda())[:, :3].float()) - 0.1) / 0.8).clamp(0, 1)
        got = decoder(tokens().cuda())
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=0)   # both in float16; summed in other orders
    decoder.cpu()
    assert all(c.w.dtype == torch.float32 for c in convs)


@cuda_only
def test_cuda_step_runs_mixed_precision_and_clipdraw_never_waits_for_the_device(tiny_files):
    """Synchronisations inside kornia are its own; none may come from clipdraw's code."""
    from clipdraw import load_models

    models = load_models(str(tiny_files["clip"]), str(tiny_files["decoder"]), device="cuda")
    torch.manual_seed(0)
    run = Optimization(models, parse_schedule("a cat"), GenerationConfig(iters=10, relaxation="gumbel", **FAST))
    run.step(1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for step in range(2, 6):
                loss, similarity = run.step(step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ours = [f"{w.filename}:{w.lineno}" for w in caught
            if "synchroniz" in str(w.message) and "clipdraw" in w.filename.replace("\\", "/").split("/")]
    assert not ours, ours
    assert torch.isfinite(loss).all() and similarity.dtype == torch.float32


MALLOC_SCRIPT = """
import ctypes, json, sys
import torch
from clipdraw.device import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert keep_freed_memory()
state = lambda: {"mapped": libc.mallinfo2().hblkhd, "heap": libc.mallinfo2().arena}
before = state()
big = torch.ones(2**24)   # 64 MB: what a step allocates, writes and frees
alive = state()
del big
print(json.dumps({"before": before, "alive": alive, "freed": state()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and mallinfo2")
def test_kept_freed_memory_serves_big_tensors_from_the_heap_and_keeps_them():
    def malloc_state(mode: str) -> dict:
        result = subprocess.run([sys.executable, "-c", MALLOC_SCRIPT, mode], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.splitlines()[-1])

    size = 2**26
    default = malloc_state("default")
    assert default["alive"]["mapped"] - default["before"]["mapped"] >= size   # a fresh mapping, unmapped on free
    assert default["freed"]["mapped"] == default["before"]["mapped"]
    kept = malloc_state("keep")
    assert kept["alive"]["mapped"] - kept["before"]["mapped"] < size // 64    # from the heap instead
    assert kept["alive"]["heap"] - kept["before"]["heap"] >= size
    assert kept["freed"]["heap"] == kept["alive"]["heap"]                     # and kept there once freed


@pytest.mark.parametrize("extra,expected", [([], 1), (["--low-memory"], 0)])
def test_the_command_keeps_freed_memory_on_cpu_but_not_with_low_memory(tmp_path, monkeypatch, tiny_files,
                                                                       extra, expected):
    import clipdraw.cli as clipdraw_cli

    calls = []
    monkeypatch.setattr("clipdraw.device.keep_freed_memory", lambda: calls.append(True) or True)
    with pytest.raises(SystemExit) as exit_info:
        clipdraw_cli.main(["a cat", "--out", str(tmp_path / "out"), "--decoder", str(tiny_files["decoder"]),
                           "--clip-model", str(tiny_files["clip"]), "--device", "cpu", "--size", "32", "--cutn", "2",
                           "--iters", "2", "--quiet", "--no-gif", *extra])
    assert exit_info.value.code in (0, None)
    assert len(calls) == expected
    assert len(list((tmp_path / "out").glob("*/final.png"))) == 1
