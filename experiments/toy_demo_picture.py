"""The README's picture (docs/images/toy-demo.png): optimizer frames for one prompt of each shape
at the toy defaults and seed 0 (not chosen for looking good), the judge's pick boxed and always
shown, the analytic judge's verdict under each frame. With ``--relations``, docs/images/toy-relations.png:
three relation prompts, each at the toy defaults and again without its half-pictures
(``--region-weight 0``), seed 0.

    python experiments/toy_demo_picture.py [--relations]
"""

import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

from clipdraw.config import toy_config
from clipdraw.optimize import generate
from clipdraw.toy.world import load_toy_models
from clipdraw.toy.judge import satisfies

PROMPTS = (("a red circle", 0), ("a picture of a blue square", 0), ("an image of a green triangle", 0))
RELATIONS = (("a red circle above a blue square", 0), ("a green triangle left of a yellow square", 0),
             ("a picture of a blue circle below a red triangle", 0))   # fixed before they were run
SHOWN = (0, 10, 30, 60, 100, 150, 200, 300)   # iterations shown (0: the blank canvas)


def tile(frame, prompt: str, chosen: bool) -> np.ndarray:
    canvas = Image.new("RGB", (136, 150), "white")
    canvas.paste(frame.image.resize((128, 128), Image.NEAREST), (4, 4))
    draw = ImageDraw.Draw(canvas)
    if chosen:
        draw.rectangle((1, 1, 134, 134), outline=(0, 0, 0), width=3)
    verdict = "judge: yes" if satisfies(prompt, frame.image) else "judge: no"
    draw.text((6, 134), f"it {frame.iteration} {verdict}", fill=(0, 0, 0))
    return np.asarray(canvas)


def main(relations: bool = False) -> None:
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    models = load_toy_models("cpu")
    runs = ([(prompt, seed, {}) for prompt, seed in PROMPTS] if not relations else
            [(prompt, seed, settings) for prompt, seed in RELATIONS for settings in ({}, {"region_weight": 0.0})])
    rows = []
    for prompt, seed, settings in runs:
        result = generate(models, prompt, toy_config(seed=seed, **settings), progress=False, keep_images=True)
        picked = result.chosen_frame.iteration
        tiles = [tile(f, prompt, f.iteration == picked) for f in result.frames if f.iteration in SHOWN + (picked,)]
        label = Image.new("RGB", (136 * len(tiles), 18), "white")
        kept = "" if result.candidate is None else f" of candidate {result.candidate + 1} of {len(result.candidate_scores)}"
        changed = "".join(f", --{name.replace('_', '-')} {value}" for name, value in settings.items())
        ImageDraw.Draw(label).text((4, 3), f'"{prompt}" seed {seed}{changed}: final.png is the boxed frame '
                                           f"(the judge's pick: it {picked}{kept})",
                                   fill=(0, 0, 0))
        rows += [np.asarray(label), np.concatenate(tiles, 1)]
    width = max(row.shape[1] for row in rows)   # a row whose pick is not among SHOWN has one tile more
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    out = "docs/images/toy-relations.png" if relations else "docs/images/toy-demo.png"
    Image.fromarray(np.concatenate(rows, 0)).save(out)


if __name__ == "__main__":
    main(relations="--relations" in sys.argv[1:])
