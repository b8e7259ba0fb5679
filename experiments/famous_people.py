#!/usr/bin/env python3
"""Re-run the seed article's probe of famous people with the pseudo-DALL-E.

The article ran ``draw_image_based_upon_text(text, 4000..7000)`` on these prompts and watched
faces appear around iteration 1250 and a second face creep in around 1400. This script loads
the models once and writes one run folder per prompt (frames every 50 iterations, GIF,
run.json), so the frames can be compared iteration by iteration.

    python experiments/famous_people.py --iters 4000 --out outputs/famous-people
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from clipdraw import GenerationConfig, generate, load_models
from clipdraw.outputs import RunWriter, make_run_dir

PROMPTS = [
    "a photo of albert einstein",
    "albert einstein",
    "a photo of the face of steve jobs",
    "a photo of steve jobs",
    "steve jobs",
    "a photo of Bill Gates",
    "a photo of the face of bill gates",
    "barack obama",
    "a photo of barack obama",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=4000)
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cutn", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("outputs/famous-people"))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    models = load_models(device=args.device)
    for prompt in PROMPTS:
        config = GenerationConfig(iters=args.iters, seed=args.seed, cutn=args.cutn, save_every=args.save_every)
        writer = RunWriter(make_run_dir(args.out, prompt, args.seed), prompt, asdict(config),
                           {"models": models.info, "device": str(models.device)})
        result = generate(models, prompt, config, on_frame=writer.add_frame)
        writer.finish(result)
        print(f"{prompt!r}: similarity {result.final_similarity:.4f} -> {writer.run_dir}")
        if result.interrupted:
            break


if __name__ == "__main__":
    main()
