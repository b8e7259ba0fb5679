#!/usr/bin/env python3
"""Seconds per image: dalle-mini and dalle-mega (through min-dalle) beside the CLIP-guided optimizer.

What is measured
----------------
All models have their real sizes and random weights (timing does not depend on the
weights, and nothing is downloaded), on one device, in one run of this script.

* dalle-mini / dalle-mega: ``clipdraw.dallemini.random_min_dalle`` (min-dalle's own
  encoder, decoder and VQGAN classes at the published sizes), sampled through min-dalle's
  own loop with clipdraw's settings (top-k 256, supercondition 16, one image per pass).
  One image = the BART encoder once + 256 decoder steps (each over the prompt and the
  empty prompt, for superconditioning) + one VQGAN decode. ``--tokens T`` samples only the
  first T tokens (a multiple of 32) and extrapolates: s/token is (time for T tokens, less
  the encoder and the T/32 VQGAN decodes min-dalle's progressive stream makes) / T, and
  the encoder and one VQGAN decode are timed on their own. ``--tokens 256`` times whole
  images. The "with frames" column adds the 7 extra VQGAN decodes the progress GIF costs.
  ``--mega-layers N`` builds dalle-mega with N of its 24 layers (where memory is short) and
  scales its per-token time by 24 / N (an overestimate by the share of the output
  layer, about 2%); the table says when it did.
* optimizer: ``clipdraw.optimize.Optimization.step`` at its defaults (256 px, 32 cutouts,
  CLIP ViT-B/32, dVAE vocabulary 8192, softmax), built by benchmarks/step_benchmark.py's
  random-model builders. s/image = median s/step x the default 1000 iterations (frame
  snapshots, 20 decodes of one image, are left out).

How to run
----------
    python benchmarks/dallemini_benchmark.py                                # CPU or GPU, whole images
    python benchmarks/dallemini_benchmark.py --tokens 32 --opt-steps 2      # a quick CPU estimate
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPT = "a watercolour painting of a lighthouse on a cliff at dusk"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--variants", default="mini,mega", help="which of mini,mega to time")
    parser.add_argument("--tokens", type=int, default=256, help="tokens sampled per variant (multiple of 32)")
    parser.add_argument("--mega-layers", type=int, default=None, help="build dalle-mega with this many layers")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--opt-steps", type=int, default=3, help="timed optimizer steps (after one warm-up)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.tokens < 32 or args.tokens > 256 or args.tokens % 32:
        parser.error("--tokens must be 32, 64, ..., 256")
    if args.mega_layers is not None and not 1 <= args.mega_layers <= 24:
        parser.error("--mega-layers must be 1 to 24")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not set(args.variants) <= {"mini", "mega"}:
        parser.error("--variants: some of mini,mega")
    return args


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device, fn):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def time_dallemini(variant: str, args, device) -> dict:
    """Encoder, decoder steps and one VQGAN decode of one image, for one variant."""
    import torch
    from clipdraw.dallemini import FRAME_TOKENS, IMAGE_TOKENS, TEXT_TOKENS, inference_session, random_min_dalle

    layers = args.mega_layers if variant == "mega" else None
    setup_s, model = _timed(device, lambda: random_min_dalle(mega=variant == "mega", dtype=args.dtype,
                                                             device=device, layer_count=layers))
    params = sum(p.numel() for m in (model.encoder, model.decoder) for p in m.parameters())
    with inference_session(device, seed=0):
        text = torch.ones(2, TEXT_TOKENS, dtype=torch.long, device=device)
        codes = torch.randint(0, 2 ** 14, (1, IMAGE_TOKENS), device=device)
        with torch.autocast(device.type, dtype=getattr(torch, args.dtype), enabled=device.type == "cuda"):
            model.encoder(text)                                        # warm-up
            encoder_s, _ = _timed(device, lambda: model.encoder(text))
        model.detokenizer(False, codes)                                # warm-up
        decode_s, _ = _timed(device, lambda: model.detokenizer(False, codes))
        yields = args.tokens // FRAME_TOKENS
        progressive = args.tokens < IMAGE_TOKENS

        def sample():
            stream = model.generate_raw_image_stream(PROMPT, seed=-1, grid_size=1, progressive_outputs=progressive,
                                                     top_k=256, supercondition_factor=16)
            for i, _ in enumerate(stream, 1):
                if i == yields:
                    stream.close()
                    break

        sample_s, _ = _timed(device, sample)
    decodes = yields if progressive else 1
    per_token = (sample_s - encoder_s - decodes * decode_s) / args.tokens
    if layers:
        per_token *= 24 / layers
    image_s = encoder_s + IMAGE_TOKENS * per_token + decode_s
    result = {"engine": f"dalle-{variant}", "parameters": params, "layers": model.layer_count,
              "scaled_from_layers": layers, "setup_s": setup_s, "tokens_sampled": args.tokens,
              "sampling_s": sample_s, "encoder_s": encoder_s, "vqgan_decode_s": decode_s,
              "s_per_token": per_token, "s_per_image": image_s,
              "s_per_image_with_frames": image_s + (IMAGE_TOKENS // FRAME_TOKENS - 1) * decode_s}
    return result


def time_optimizer(args, device) -> dict:
    """generate()'s own step at the default settings, on step_benchmark's random real-size models."""
    sys.path.insert(0, HERE)
    import step_benchmark
    from clipdraw.config import GenerationConfig

    defaults = GenerationConfig()
    options = SimpleNamespace(size=defaults.size, cutn=defaults.cutn, clip="ViT-B/32", vocab=8192,
                              relaxation=defaults.relaxation, warmup=1, steps=args.opt_steps)
    setup_s, step = _timed(device, lambda: step_benchmark.clipdraw_step(options, device))
    times = []
    for i in range(1, args.opt_steps + 2):
        seconds, _ = _timed(device, lambda: step(i))
        if i > 1:
            times.append(seconds)
    per_step = statistics.median(times)
    return {"engine": "optimizer", "setup_s": setup_s, "steps_timed": times, "s_per_step": per_step,
            "iterations": defaults.iters, "cutn": defaults.cutn, "size": defaults.size,
            "s_per_image": per_step * defaults.iters}


def describe_device(device) -> str:
    import torch
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    name = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"cpu ({name}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()})"


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from clipdraw.dallemini import check_dtype
    from clipdraw.device import resolve_device
    from clipdraw.errors import ClipdrawError

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    try:
        check_dtype(args.dtype, device)
    except ClipdrawError as e:
        raise SystemExit(str(e)) from None
    print(f"device: {describe_device(device)}; torch {torch.__version__}; dalle-mini dtype {args.dtype}", flush=True)
    rows = []
    for variant in args.variants:
        rows.append(time_dallemini(variant, args, device))
        gc.collect()   # the variant's model is gone with the call: free it before the next one
        print(f"  timed {rows[-1]['engine']}", flush=True)
    rows.append(time_optimizer(args, device))

    print(f"\n{'engine':<12} {'s/image':>10} {'with frames':>12}  how")
    for row in rows:
        if row["engine"] == "optimizer":
            how = (f"{len(row['steps_timed'])} steps, median {row['s_per_step']:.3f} s/step x {row['iterations']} "
                   f"iterations (256 px, cutn {row['cutn']}, ViT-B/32)")
            print(f"{row['engine']:<12} {row['s_per_image']:>10.1f} {'':>12}  {how}")
            continue
        scaled = f", scaled from {row['scaled_from_layers']} layers" if row["scaled_from_layers"] else ""
        how = (f"{row['parameters'] / 1e9:.2f}B params{scaled}; {row['tokens_sampled']} tokens in "
               f"{row['sampling_s']:.1f} s -> {row['s_per_token']:.3f} s/token; encoder {row['encoder_s']:.2f} s; "
               f"VQGAN decode {row['vqgan_decode_s']:.2f} s")
        print(f"{row['engine']:<12} {row['s_per_image']:>10.1f} {row['s_per_image_with_frames']:>12.1f}  {how}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": describe_device(device), "torch": torch.__version__, "args": vars(args),
                       "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
