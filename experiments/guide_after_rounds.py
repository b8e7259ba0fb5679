"""The shipped guide trained on for a few more steps of its base recipe after its rounds (scenes,
twins, near misses, redraws, PGD, silhouettes; no drawn frames), written into a copy of the toy
weights: whether the reading of blue squares the rounds took away comes back. Measured in
docs/toy-guidance.md ("Silhouettes in the loss"); read the copy's guide with
``python benchmarks/toy_judges.py guide:OUT --samples 0``.

    python experiments/guide_after_rounds.py OUT --steps 100 [--silhouettes 0.6] [--lr-share 1.0]
"""

import argparse
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import torch

from clipdraw.toy.models import clip_state_for_saving, load_toy_clip, load_toy_dvae, save_weights, weights_dir
from clipdraw.toy.train import TrainConfig
from clipdraw.toy.train_clip import _as_saved, saved_token_rows, train_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="a new folder: a copy of the toy weights, its guide trained on")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--silhouettes", type=float, default=TrainConfig().clip_silhouettes,
                        help="share of the scenes shown as silhouettes")
    parser.add_argument("--lr-share", type=float, default=TrainConfig().clip_round_lr,
                        help="peak learning rate as a share of the base one (default: the rounds')")
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists: name a new folder")
    shutil.copytree(weights_dir(), args.out)
    config = replace(TrainConfig(), clip_round_lr=args.lr_share)
    torch.manual_seed(config.seed)
    torch.set_flush_denormal(True)
    after_rounds = config.clip_steps + config.clip_rounds * config.clip_round_steps
    model = train_clip(config, [], dvae=load_toy_dvae(args.out), model=load_toy_clip(args.out), steps=args.steps,
                       step_offset=after_rounds, silhouette_share=args.silhouettes)
    _as_saved(model)
    save_weights(args.out / "clip.safetensors", clip_state_for_saving(model, saved_token_rows(config, True)),
                 {"train_config": asdict(config)})


if __name__ == "__main__":
    main()
