"""The five single-object prompts of the issue's check (tests/test_toy.py) at several seeds, for the
guide in use (``CLIPDRAW_TOY_WEIGHTS`` to compare another): whether the analytic judge accepts
final.png (the judge CLIP's pick) and the last frame, run as the benchmark runs (one thread,
denormals flushed).

    python experiments/five_prompts.py --seeds 0,1,2
    python experiments/five_prompts.py --seeds 0,1,2 --device cuda   # the same on a GPU (CLIP in float16)
"""

import argparse
import time
from contextlib import contextmanager
from typing import Iterator, List, Tuple

import torch

from clipdraw import generate
from clipdraw.config import toy_config
from clipdraw.toy.judge import satisfies
from clipdraw.toy.models import weights_source
from clipdraw.toy.world import load_toy_models

PROMPTS = ("a red circle", "a picture of a blue square", "an image of a green triangle", "a yellow square",
           "a red triangle")


@contextmanager
def as_the_benchmark_runs() -> Iterator[None]:
    """One thread and denormals flushed, as benchmarks/toy_success.py runs (the thread count
    changes sums, and so which frame a run ends on); the settings before are restored after."""
    threads, flush = torch.get_num_threads(), torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(flush)


def verdicts(models, prompt: str, seed: int) -> Tuple[bool, bool]:
    """Whether the analytic judge accepts the run's final.png (the judge CLIP's pick) and its last frame."""
    result = generate(models, prompt, toy_config(seed=seed), progress=False, keep_images=True)
    return satisfies(prompt, result.chosen_frame.image), satisfies(prompt, result.frames[-1].image)


def report(models, seeds: List[int]) -> None:
    """The table of verdicts, one row per prompt, one column per seed, and the totals."""
    print(f"guide{weights_source() or ' (shipped)'}")
    print("| prompt | " + " | ".join(f"seed {s}: pick / last" for s in seeds) + " |")
    print("| --- |" + " --- |" * len(seeds))
    picks = lasts = 0
    start = time.perf_counter()
    for prompt in PROMPTS:
        cells = []
        for seed in seeds:
            pick, last = verdicts(models, prompt, seed)
            picks, lasts = picks + pick, lasts + last
            cells.append(f"{'yes' if pick else 'no'} / {'yes' if last else 'no'}")
        print(f"| {prompt} | " + " | ".join(cells) + " |", flush=True)
    runs = len(PROMPTS) * len(seeds)
    print(f"accepted: picks {picks} of {runs}, last frames {lasts} of {runs} "
          f"({time.perf_counter() - start:.0f} s on {models.device})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--device", default="cpu", help="cpu (as the test runs), cuda or auto")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    with as_the_benchmark_runs():
        report(load_toy_models(args.device), seeds)


if __name__ == "__main__":
    main()
