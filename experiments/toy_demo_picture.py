"""The README's picture (docs/images/toy-demo.png): optimizer frames for three toy prompts at the
toy defaults (the kept candidate's), the judge's pick boxed, the analytic judge's verdict under each frame.

    python experiments/toy_demo_picture.py
"""

import numpy as np
import torch
from PIL import Image, ImageDraw

from clipdraw.config import toy_config
from clipdraw.optimize import generate
from clipdraw.toy.world import load_toy_models
from clipdraw.toy.judge import satisfies

PROMPTS = (("an image of a blue triangle", 9), ("a painting of a green triangle", 6), ("a red circle", 1))
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


def main() -> None:
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    models = load_toy_models("cpu")
    rows = []
    for prompt, seed in PROMPTS:
        result = generate(models, prompt, toy_config(seed=seed), progress=False, keep_images=True)
        tiles = [tile(f, prompt, f.iteration == result.chosen_frame.iteration)
                 for f in result.frames if f.iteration in SHOWN]
        label = Image.new("RGB", (136 * len(tiles), 18), "white")
        kept = "" if result.candidate is None else f" of candidate {result.candidate + 1} of {len(result.candidate_scores)}"
        ImageDraw.Draw(label).text((4, 3), f'"{prompt}" seed {seed}: final.png is the boxed frame '
                                           f"(the judge's pick: it {result.chosen_frame.iteration}{kept})",
                                   fill=(0, 0, 0))
        rows += [np.asarray(label), np.concatenate(tiles, 1)]
    Image.fromarray(np.concatenate(rows, 0)).save("docs/images/toy-demo.png")


if __name__ == "__main__":
    main()
