"""The five single-object prompts of the issue's check (tests/test_toy.py) at several seeds, for the
guide in use (``CLIPDRAW_TOY_WEIGHTS`` to compare another): whether the analytic judge accepts
final.png (the judge CLIP's pick) and the last frame, run as the benchmark runs (one thread,
denormals flushed).

    python experiments/five_prompts.py --seeds 0,1,2
"""

import argparse

import torch

from clipdraw import generate
from clipdraw.config import toy_config
from clipdraw.toy.judge import satisfies
from clipdraw.toy.models import weights_source
from clipdraw.toy.world import load_toy_models

PROMPTS = ("a red circle", "a picture of a blue square", "an image of a green triangle", "a yellow square",
           "a red triangle")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    seeds = [int(s) for s in parser.parse_args().seeds.split(",")]
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    models = load_toy_models("cpu")
    print(f"guide{weights_source() or ' (shipped)'}")
    print("| prompt | " + " | ".join(f"seed {s}: pick / last" for s in seeds) + " |")
    print("| --- |" + " --- |" * len(seeds))
    picks = lasts = 0
    for prompt in PROMPTS:
        cells = []
        for seed in seeds:
            result = generate(models, prompt, toy_config(seed=seed), progress=False, keep_images=True)
            pick, last = satisfies(prompt, result.chosen_frame.image), satisfies(prompt, result.frames[-1].image)
            picks, lasts = picks + pick, lasts + last
            cells.append(f"{'yes' if pick else 'no'} / {'yes' if last else 'no'}")
        print(f"| {prompt} | " + " | ".join(cells) + " |", flush=True)
    runs = len(PROMPTS) * len(seeds)
    print(f"accepted: picks {picks} of {runs}, last frames {lasts} of {runs}")


if __name__ == "__main__":
    main()
