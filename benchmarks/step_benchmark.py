"""Time one optimization step of clipdraw against the "DALL-E dVAE + CLIP" Colab notebook loop,
count its FLOPs against this machine's matmul speed, and measure batching and --low-memory.

What is measured
----------------
One step = latents -> relaxation -> dVAE decoder -> cutouts + augmentations -> CLIP image
encoder -> loss -> backward -> Adam step, at identical work in both paths: same image size,
same number of cutouts (each 224 px for ViT-B/32), the same randomly initialised models
(real sizes: ``dall_e.Decoder()`` with its defaults and a ``clip.model.CLIP`` with the
published dims, float32; no pretrained weights are needed, timing does not depend on them),
the same kornia augmentations (clipdraw's defaults) and the same Gumbel (or softmax)
relaxation. The randomness itself differs between paths; the amount of work does not.

Variants (``--variants``, each in its own fresh subprocess, so peak memory is per variant):

* ``clipdraw``: ``clipdraw.optimize.Optimization.step``, the very step ``generate()`` runs,
  around models wrapped in ``DVAEDecoder`` / ``ClipModel`` (both frozen), one image.
* ``notebook``: a faithful re-implementation of the widely copied notebook loop: a latent
  Parameter of shape (1, vocab, g*g) put through ``gumbel_softmax`` over its last (spatial)
  axis and ``.view``-ed to (1, vocab, g, g); dall_e's ``Decoder`` called directly (its
  parameters left requiring grad, as ``dall_e`` builds them, and on CUDA its convolutions
  re-cast their weights to half on every call); ``unmap_pixels(sigmoid(out[:, :3]))``;
  cutouts sliced and ``F.interpolate``-d one by one in a Python loop, then ``torch.cat``;
  the augmentations; torchvision-style normalisation; ``encode_image`` with CLIP's
  parameters NOT frozen (so backward also computes, and accumulates, weight gradients for
  CLIP and the decoder); loss ``10 * -cosine_similarity(...).mean()``; Adam on the latent.
* ``batch``: clipdraw's step with ``--batch N`` (``--batch``, default 4): N images, N times
  the cutouts, one decoder and one CLIP call. Compare its step time with ``clipdraw``'s:
  ``batch cost`` = batch step / one-image step (N would be no gain at all).
* ``low-memory``: clipdraw's step with ``--low-memory``, at ``--memory-size`` (default 512),
  next to a plain ``clipdraw`` step at that size (run for the comparison when the sizes differ).
* ``compile``: clipdraw's step with ``--compile`` (torch.compile; compiling happens in the
  warm-up steps, at least one, which are not timed).
* ``kept-memory``: clipdraw's step in a process that first calls
  ``clipdraw.device.keep_freed_memory()``, as the command line does on CPU (glibc keeps freed
  blocks instead of unmapping them), and, when ``batch`` is also asked for, the batch step so
  too. The other variants run with glibc's defaults, as a notebook would.

Per variant: ``time.perf_counter`` around each step, with ``torch.cuda.synchronize`` on CUDA;
``--warmup`` steps run first and are not timed. FLOPs: one further step under
``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matrix products and attention,
forward and backward; elementwise work is not counted), divided by the median step time
for the achieved GFLOP/s. Matmul GFLOP/s: the best of 3 products of two 4096x4096 float32
matrices (float16 too on CUDA), about a second each on a CPU, in the same process and
threads, just before the steps: what this machine's BLAS sustains on the friendliest shape;
the step's fraction of it says how much of the time goes to anything but dense arithmetic. Memory: on CUDA
``torch.cuda.max_memory_allocated`` over the steps; on CPU the process's peak resident set
(``VmHWM``), reset after setup through ``/proc/self/clear_refs``, so it covers the steps
(and still includes the models' weights, shown separately as "after setup").

How to run
----------
    python benchmarks/step_benchmark.py                          # 256 px, cutn 8, ViT-B/32, 5 steps
    python benchmarks/step_benchmark.py --size 128 --cutn 4 --steps 2   # quick check
    python benchmarks/step_benchmark.py --variants clipdraw,notebook,batch,low-memory --cutn 8,32 --steps 3
    python benchmarks/step_benchmark.py --device cuda --cutn 32 --json results.json

How to read the ratios
----------------------
``speedup = median notebook step time / median clipdraw step time``: above 1, clipdraw's
step is that many times faster at the same size and cutn. ``batch cost`` is the batch
step's time over one image's (N images for less than N times the time is the gain).
``memory cut = 1 - peak(low-memory) / peak(plain)`` at ``--memory-size``, for the whole
process and for what the steps add over the setup. Medians over few steps are noisy on a
busy machine: compare the "min" column as well, and use more ``--steps`` for numbers to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

PROMPT = "a watercolour painting of a lighthouse on a cliff at dusk"
SEED = 0
LR = 0.1                 # both the notebook's and clipdraw's default
NOTEBOOK_GUMBEL_TAU = 2  # the tau most copies of the notebook use (the value does not change the cost)

# clip.model.CLIP(**dims) for OpenAI's published architectures.
_TEXT = dict(context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)
CLIP_DIMS = {
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=32, **_TEXT),
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=16, **_TEXT),
    "ViT-L/14": dict(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024,
                     vision_patch_size=14, **{**_TEXT, "transformer_width": 768, "transformer_heads": 12}),
}
VARIANTS = ("clipdraw", "notebook", "batch", "low-memory", "compile", "kept-memory")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time one clipdraw optimization step against the DALL-E dVAE + CLIP notebook loop; "
                    "count its FLOPs; measure --batch and --low-memory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (multiple of 8)")
    parser.add_argument("--cutn", type=_int_list, default="8", help="cutouts per step; a list (8,32) runs each")
    parser.add_argument("--variants", type=_variant_list, default="clipdraw,notebook",
                        help=f"comma-separated, some of {','.join(VARIANTS)}")
    parser.add_argument("--batch", type=int, default=4, help="images in the 'batch' variant")
    parser.add_argument("--memory-size", type=int, default=512, help="image side of the 'low-memory' variant")
    parser.add_argument("--low-memory", action="store_true", help=argparse.SUPPRESS)   # set in the children
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keep-freed-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clip", default="ViT-B/32", choices=sorted(CLIP_DIMS), help="CLIP architecture (random weights)")
    parser.add_argument("--vocab", type=int, default=8192, help="dVAE vocabulary size (dall_e.Decoder vocab_size)")
    parser.add_argument("--relaxation", default="gumbel", choices=("gumbel", "softmax"),
                        help="latent relaxation, used by both paths (the notebook uses gumbel)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")
    parser.add_argument("--only", choices=("clipdraw", "notebook"), help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("size", "memory_size"):
        if getattr(args, name) <= 0 or getattr(args, name) % 8:
            parser.error(f"--{name.replace('_', '-')} must be a positive multiple of 8, got {getattr(args, name)}")
    if min(args.cutn) < 1 or args.steps < 1 or args.batch < 1:
        parser.error("--cutn, --steps and --batch must be at least 1")
    if args.only:
        args.cutn = args.cutn[0]
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    if args.vocab < 512:
        parser.error("--vocab must be at least 512 (dall_e.Decoder's own limit)")
    return args


def _int_list(text: str) -> list:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None


def _variant_list(text: str) -> list:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown variant {unknown[0] if unknown else text!r}: "
                                         f"expected some of {','.join(VARIANTS)}")
    return names


# --------------------------------------------------------------------------- measuring helpers


def _proc_status_bytes(key: str):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024   # reported in kB
    except OSError:
        pass
    return None


class MemoryProbe:
    """Peak memory over a stretch of the run: CUDA allocator peak, or the process's peak RSS."""

    def __init__(self, device):
        import torch
        self.torch, self.device = torch, device
        self.cuda = device.type == "cuda"
        self.kind = "cuda max_memory_allocated" if self.cuda else "peak RSS (VmHWM)"
        self.after_setup = None

    def current(self):
        if self.cuda:
            return self.torch.cuda.memory_allocated(self.device)
        return _proc_status_bytes("VmRSS")

    def reset(self) -> None:
        self.after_setup = self.current()
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")   # resets VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            self.kind = "peak RSS of the whole process (could not reset after setup)"

    def peak(self):
        if self.cuda:
            return self.torch.cuda.max_memory_allocated(self.device)
        peak = _proc_status_bytes("VmHWM")
        if peak is None:   # no /proc: ru_maxrss is kB on Linux, bytes on macOS
            import resource
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = rss if sys.platform == "darwin" else rss * 1024
            self.kind = "peak RSS of the whole process (ru_maxrss)"
        return peak


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device) -> str:
    import torch
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu ({name}, {os.cpu_count()} logical cores)"


def _time_steps(step, device, warmup: int, steps: int, probe: MemoryProbe):
    """Run ``step(i)`` for i = 1..warmup+steps; return the timed steps' seconds and the peak memory."""
    _sync(device)
    probe.reset()
    times = []
    for i in range(1, warmup + steps + 1):
        _sync(device)
        start = time.perf_counter()
        step(i)
        _sync(device)
        if i > warmup:
            times.append(time.perf_counter() - start)
    return times, probe.peak()


def step_flops(step, i: int) -> int:
    """FLOPs of ``step(i)`` as torch's flop counter sees them (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        step(i)
    return counter.get_total_flops()


def matmul_gflops(device, dtype_name: str = "float32", n: int = 4096, repeats: int = 3) -> float:
    """Best GFLOP/s of an n x n by n x n product: the machine's dense-arithmetic ceiling, here and now."""
    import torch
    dtype = getattr(torch, dtype_name)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for i in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        if i:   # the first warms the BLAS up
            best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


# --------------------------------------------------------------------------- models


def build_raw_models(args, device):
    """The same randomly initialised dall_e Decoder and CLIP in every subprocess (fixed seed), float32."""
    import torch
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import clip
        import dall_e
    torch.manual_seed(SEED)
    decoder = dall_e.Decoder(vocab_size=args.vocab).to(device)
    model = clip.model.CLIP(**CLIP_DIMS[args.clip]).float().eval().to(device)
    return decoder, model


# --------------------------------------------------------------------------- clipdraw


def _clipdraw_config(args, iters: int):
    from clipdraw.optimize import GenerationConfig
    return GenerationConfig(iters=iters, seed=SEED, size=args.size, cutn=args.cutn, lr=LR,
                            relaxation=args.relaxation, save_every=iters + 1, batch=getattr(args, "batch", 1),
                            low_memory=getattr(args, "low_memory", False), compile=getattr(args, "compile", False))


def _clipdraw_models(args, device):
    from clipdraw.dvae import DVAEDecoder
    from clipdraw.models import ClipModel, Models
    decoder, model = build_raw_models(args, device)
    return Models(clip=ClipModel(model).to(device), decoder=DVAEDecoder(decoder).to(device), device=device)


def clipdraw_step(args, device):
    """generate()'s own step: an Optimization built as generate() builds it."""
    import torch
    from clipdraw.optimize import Optimization
    from clipdraw.prompts import parse_schedule

    models = _clipdraw_models(args, device)
    config = _clipdraw_config(args, args.warmup + args.steps + 1)   # + 1: the step whose FLOPs are counted
    torch.manual_seed(config.seed)
    run = Optimization(models, parse_schedule(PROMPT), config)

    def step(i: int) -> None:
        _, similarity = run.step(i)
        if i % 10 == 0 or i == 1:   # generate() reads the value for its progress bar
            similarity.mean().item()

    return step


# --------------------------------------------------------------------------- the notebook


def notebook_step(args, device):
    """The DALL-E dVAE + CLIP notebook's loop, written as the notebooks write it."""
    import torch
    import torch.nn.functional as F
    from clipdraw.augment import build_augmentations
    from clipdraw.config import DEFAULT_AUGMENTATIONS
    from clipdraw.models import CLIP_MEAN, CLIP_STD
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import clip
    from dall_e import unmap_pixels

    model, perceptor = build_raw_models(args, device)   # nothing frozen: both left requiring grad
    perceptor.requires_grad_(True)
    side = args.size
    grid = side // 8
    vocab = args.vocab
    cut_size = perceptor.visual.input_resolution

    try:
        import torchvision
        nom = torchvision.transforms.Normalize(CLIP_MEAN, CLIP_STD)
    except ImportError:   # the same arithmetic
        mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)
        def nom(x):
            return (x - mean) / std
    augment = build_augmentations(DEFAULT_AUGMENTATIONS).to(device)

    torch.manual_seed(SEED)
    normu = torch.nn.Parameter(torch.randn(1, vocab, grid * grid, device=device))

    def lats():
        if args.relaxation == "gumbel":
            z = F.gumbel_softmax(normu, dim=-1, tau=NOTEBOOK_GUMBEL_TAU)
        else:
            z = F.softmax(normu, dim=-1)
        return z.view(1, vocab, grid, grid)

    optimizer = torch.optim.Adam([{"params": [normu], "lr": LR}])
    tx = clip.tokenize([PROMPT])
    t = perceptor.encode_text(tx.to(device)).detach().clone()

    def step(i: int) -> None:
        out = unmap_pixels(torch.sigmoid(model(lats())[:, :3].float()))
        p_s = []
        for _ in range(args.cutn):
            size = int(side * torch.zeros(1,).normal_(mean=0.8, std=0.3).clip(0.5, 0.95))
            offsetx = torch.randint(0, side - size, ())
            offsety = torch.randint(0, side - size, ())
            apper = out[:, :, offsetx:offsetx + size, offsety:offsety + size]
            apper = F.interpolate(apper, (cut_size, cut_size), mode="bilinear")
            p_s.append(apper)
        into = torch.cat(p_s, 0)
        into = nom(augment(into))
        iii = perceptor.encode_image(into)
        loss = (10 * -torch.cosine_similarity(t, iii).view(-1, 1).T.mean(1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


# --------------------------------------------------------------------------- one path (child)


def run_path(args) -> dict:
    import torch
    if args.keep_freed_memory:
        from clipdraw.device import keep_freed_memory
        if not keep_freed_memory():
            raise SystemExit("kept-memory: glibc's mallopt is not available on this system")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        if args.device == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available")
        device = torch.device(args.device)
    import random
    import numpy as np
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)

    probe = MemoryProbe(device)
    setup_start = time.perf_counter()
    step = clipdraw_step(args, device) if args.only == "clipdraw" else notebook_step(args, device)
    result_setup_s = time.perf_counter() - setup_start
    matmul = {"float32": matmul_gflops(device)}
    if device.type == "cuda":
        matmul["float16"] = matmul_gflops(device, "float16")
    times, peak = _time_steps(step, device, args.warmup, args.steps, probe)
    flops = step_flops(step, args.warmup + args.steps + 1)
    median = statistics.median(times)
    return {
        "path": args.only,
        "size": args.size, "cutn": args.cutn, "batch": args.batch if args.only == "clipdraw" else 1,
        "low_memory": args.low_memory, "compile": args.compile, "keep_freed_memory": args.keep_freed_memory,
        "setup_s": result_setup_s,
        "times_s": times,
        "median_s": median,
        "min_s": min(times),
        "flops_per_step": flops,
        "gflops_per_s": flops / median / 1e9,
        "matmul_gflops_per_s": matmul,
        "memory_kind": probe.kind,
        "memory_after_setup_bytes": probe.after_setup,
        "memory_peak_bytes": peak,
        "environment": {
            "device": _device_name(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
        },
    }


# --------------------------------------------------------------------------- driver (parent)


def _child_argv(args, path: str, result_file: str, size: int, cutn: int, batch: int = 1, low_memory: bool = False,
                compile_step: bool = False, keep_freed_memory: bool = False) -> list:
    argv = [sys.executable, os.path.abspath(__file__), "--size", str(size), "--cutn", str(cutn),
            "--clip", args.clip, "--vocab", str(args.vocab), "--relaxation", args.relaxation,
            "--steps", str(args.steps), "--warmup", str(max(args.warmup, 1) if compile_step else args.warmup),
            "--device", args.device, "--batch", str(batch), "--only", path, "--result-file", result_file]
    if low_memory:
        argv.append("--low-memory")
    if compile_step:
        argv.append("--compile")
    if keep_freed_memory:
        argv.append("--keep-freed-memory")
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return argv


def planned_runs(args) -> list:
    """(label, child options) for every variant and cutn asked for; the plain step at
    --memory-size joins 'low-memory' when that size differs from --size."""
    runs = []
    for cutn in args.cutn:
        for variant in args.variants:
            base = dict(size=args.size, cutn=cutn)
            if variant in ("clipdraw", "notebook"):
                runs.append((variant, dict(base, path=variant)))
            elif variant == "batch":
                runs.append((f"batch {args.batch}", dict(base, path="clipdraw", batch=args.batch)))
            elif variant == "compile":
                runs.append(("compile", dict(base, path="clipdraw", compile_step=True)))
            elif variant == "kept-memory":
                runs.append(("kept-memory", dict(base, path="clipdraw", keep_freed_memory=True)))
                if "batch" in args.variants:
                    runs.append((f"batch {args.batch} kept", dict(base, path="clipdraw", batch=args.batch,
                                                                   keep_freed_memory=True)))
            else:
                if args.memory_size != args.size or "clipdraw" not in args.variants:
                    runs.append(("clipdraw", dict(base, path="clipdraw", size=args.memory_size)))
                runs.append(("low-memory", dict(base, path="clipdraw", size=args.memory_size, low_memory=True)))
    return runs


def _cpu_busy_fraction(seconds: float = 1.0):
    """Share of all cores busy over ``seconds`` (from /proc/stat), before the benchmark starts; None if unknown."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)   # idle + iowait
        return sum(values), idle
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def _gib(n) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def _find(results, label, size, cutn):
    return next((r for r in results if r["label"] == label and r["size"] == size and r["cutn"] == cutn), None)


def summarize(args, results) -> dict:
    """The ratios the README quotes, per cutn: speedup, batch cost, memory cut, compile speedup."""
    summary = {}
    for cutn in args.cutn:
        plain, notebook = _find(results, "clipdraw", args.size, cutn), _find(results, "notebook", args.size, cutn)
        batch = _find(results, f"batch {args.batch}", args.size, cutn)
        compiled = _find(results, "compile", args.size, cutn)
        kept, kept_batch = (_find(results, "kept-memory", args.size, cutn),
                            _find(results, f"batch {args.batch} kept", args.size, cutn))
        big, low = _find(results, "clipdraw", args.memory_size, cutn), _find(results, "low-memory", args.memory_size, cutn)
        entry = {}
        if plain and notebook:
            entry["speedup_vs_notebook"] = notebook["median_s"] / plain["median_s"]
        if plain:
            entry["matmul_fraction"] = plain["gflops_per_s"] / plain["matmul_gflops_per_s"]["float32"]
        if plain and batch:
            entry["batch_cost"] = batch["median_s"] / plain["median_s"]
        if plain and compiled:
            entry["compile_speedup"] = plain["median_s"] / compiled["median_s"]
        if plain and kept:
            entry["kept_memory_time"] = kept["median_s"] / plain["median_s"]
            if None not in (plain["memory_peak_bytes"], kept["memory_peak_bytes"]):
                entry["kept_memory_extra_bytes"] = kept["memory_peak_bytes"] - plain["memory_peak_bytes"]
        if kept and kept_batch:
            entry["kept_batch_cost"] = kept_batch["median_s"] / kept["median_s"]
        if big and low and None not in (big["memory_peak_bytes"], low["memory_peak_bytes"]):
            entry["memory_cut"] = 1 - low["memory_peak_bytes"] / big["memory_peak_bytes"]
            extra = [r["memory_peak_bytes"] - r["memory_after_setup_bytes"] for r in (big, low)]
            entry["memory_cut_over_setup"] = 1 - extra[1] / extra[0]
            entry["low_memory_time_cost"] = low["median_s"] / big["median_s"]
        summary[cutn] = entry
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.only:
        result = run_path(args)
        with open(args.result_file, "w") as f:
            json.dump(result, f)
        return 0

    busy = _cpu_busy_fraction()
    if busy is not None and busy > 0.15:
        print(f"warning: the CPU is {busy:.0%} busy with other work before starting: it competes with the "
              f"benchmark and will inflate and scatter the timings", file=sys.stderr)
    results = []
    with tempfile.TemporaryDirectory(prefix="step_benchmark.") as tmp:
        for n, (label, options) in enumerate(planned_runs(args)):
            options = dict(options)
            path = options.pop("path")
            print(f"running {label} at {options['size']} px, cutn {options['cutn']} "
                  f"({args.warmup} warmup + {args.steps} timed steps + 1 counted) ...", flush=True)
            result_file = os.path.join(tmp, f"{n}.json")
            proc = subprocess.run(_child_argv(args, path, result_file, **options))
            if proc.returncode != 0 or not os.path.exists(result_file):
                print(f"error: the {label} subprocess failed (exit status {proc.returncode})", file=sys.stderr)
                return 1
            with open(result_file) as f:
                results.append({"label": label, **json.load(f)})

    env = results[0]["environment"]
    print()
    print(f"config: CLIP {args.clip} (random init), dVAE vocab {args.vocab}, relaxation {args.relaxation}, "
          f"float32 weights, {args.warmup} warmup + {args.steps} timed steps")
    print(f"device: {env['device']}")
    print(f"torch {env['torch']}, threads {env['threads']}, python {env['python']}, "
          f"CPU busy before start: {'n/a' if busy is None else f'{busy:.0%}'}")
    print(f"memory: {results[0]['memory_kind']}; FLOPs: torch.utils.flop_counter over one step")
    print()
    header = (f"{'variant':<12} {'px':>4} {'cutn':>4} {'median s':>9} {'min s':>7} {'s/image':>8} {'GFLOP':>7} "
              f"{'GFLOP/s':>8} {'matmul':>7} {'of mm':>6} {'peak mem':>10} {'setup mem':>10}")
    print(header)
    print("-" * len(header))
    for r in results:
        matmul = r["matmul_gflops_per_s"]["float32"]
        print(f"{r['label']:<12} {r['size']:>4} {r['cutn']:>4} {r['median_s']:>9.3f} {r['min_s']:>7.3f} "
              f"{r['median_s'] / r['batch']:>8.3f} {r['flops_per_step'] / 1e9:>7.1f} {r['gflops_per_s']:>8.1f} "
              f"{matmul:>7.1f} {r['gflops_per_s'] / matmul:>6.0%} {_gib(r['memory_peak_bytes']):>10} "
              f"{_gib(r['memory_after_setup_bytes']):>10}")
    print("(matmul: float32 GFLOP/s of a 4096^2 product in the same process; of mm: the step's share of it)")
    summary = summarize(args, results)
    print()
    for cutn, entry in summary.items():
        parts = []
        if "speedup_vs_notebook" in entry:
            parts.append(f"speedup vs notebook {entry['speedup_vs_notebook']:.2f}x")
        if "matmul_fraction" in entry:
            parts.append(f"{entry['matmul_fraction']:.0%} of matmul GFLOP/s")
        if "batch_cost" in entry:
            parts.append(f"batch {args.batch} costs {entry['batch_cost']:.2f}x one image per step")
        if "compile_speedup" in entry:
            parts.append(f"compile {entry['compile_speedup']:.2f}x")
        if "kept_memory_time" in entry:
            extra = entry.get("kept_memory_extra_bytes")
            parts.append(f"kept-memory step {entry['kept_memory_time']:.2f}x the time"
                         + ("" if extra is None else f", peak {extra / 2**30:+.2f} GiB"))
        if "kept_batch_cost" in entry:
            parts.append(f"kept-memory batch {args.batch} costs {entry['kept_batch_cost']:.2f}x one kept image")
        if "memory_cut" in entry:
            parts.append(f"low-memory at {args.memory_size} px: peak {entry['memory_cut']:.0%} lower "
                         f"({entry['memory_cut_over_setup']:.0%} of what the step adds over setup), "
                         f"step {entry['low_memory_time_cost']:.2f}x the time")
        print(f"cutn {cutn}: " + "; ".join(parts))

    if args.json:
        report = {
            "config": {k: getattr(args, k) for k in ("size", "cutn", "variants", "batch", "memory_size", "clip",
                                                      "vocab", "relaxation", "steps", "warmup", "device", "threads")},
            "environment": {**env, "cpu_busy_before_start": busy},
            "results": results,
            "summary": summary,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
