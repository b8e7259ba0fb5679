#!/usr/bin/env python3
"""How fast the guide draws its training rounds: in the training process, or in worker processes.

``clipdraw toy train`` spends most of its time in the guide's rounds, each drawing 40 training
captions with the optimizer (``train_clip.named_drawings``). This times the first ``--captions``
captions of the first round, drawn with the shipped guide and the round's settings
(``train_clip.round_settings``): first in this process on torch's threads (the shipped recipe,
``--drawing-workers 0``), then in ``--workers`` processes of one thread each
(``--drawing-workers N``), and prints both with their ratio. It also says whether the two
drawings are the same: they need not be (one thread against several), while those of any number
of one-thread workers are (tests/test_toy.py).

    python benchmarks/toy_round_drawing.py --captions 12 --workers 2

Measured in docs/toy-world.md ("Training from scratch").
"""

from __future__ import annotations

import argparse
import time


def draw(captions: int, workers: int):
    """(seconds, [(caption, frames)]) of the first ``captions`` captions of round 1."""
    from clipdraw.toy.models import load_toy_clip, load_toy_dvae  # noqa: PLC0415
    from clipdraw.toy.train import TrainConfig  # noqa: PLC0415
    from clipdraw.toy.train_clip import _guide_drawings, round_settings  # noqa: PLC0415

    config = TrainConfig()
    encoder, decoder = load_toy_dvae()
    start = time.perf_counter()
    drawn = list(_guide_drawings(load_toy_clip(), decoder, captions, config.seed + 31,   # round 1's scenes
                                 lambda k: round_settings(config, k), f"{workers} workers", dict, encoder=encoder,
                                 workers=workers))
    return time.perf_counter() - start, drawn


def main() -> None:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=12, help="captions to draw (a round draws 40)")
    parser.add_argument("--workers", type=int, default=2, help="one-thread worker processes")
    args = parser.parse_args()
    here_seconds, here = draw(args.captions, 0)
    workers_seconds, drawn = draw(args.captions, args.workers)
    same = all(np.array_equal(a, b) for (_, x), (_, y) in zip(here, drawn) for a, b in zip(x, y))
    frames = sum(len(f) for _, f in here)
    print(f"{args.captions} captions ({frames} frames): {here_seconds:.1f} s in this process on "
          f"{torch.get_num_threads()} threads; {workers_seconds:.1f} s in {args.workers} one-thread workers "
          f"({here_seconds / workers_seconds:.2f}x); the same drawings: {'yes' if same else 'no'}")


if __name__ == "__main__":
    main()
