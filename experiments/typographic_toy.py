"""The typographic attack in the toy world (docs/evaluation.md): twelve red one-shape scenes
(circle, square, triangle; small and large; left and right), each label in turn ("circle",
"square", "triangle") written on them at 3 sizes x 3 positions, judged by the toy judge CLIP
over "a red circle", "a red square", "a red triangle". One report folder per label, and a
Markdown table of the overall rates on stdout.

    python experiments/typographic_toy.py [--out outputs/typographic-toy] [--eval-model toy-judge]
                                          [--figure docs/images/typographic-toy.png]

If the toy CLIP read the word, each label would pull towards its own class; if only the label's
pixels mattered, every label would move the probabilities alike: the table gives the mean
change of every class's probability per label. ``--figure``: a few scenes, unlabelled, with each
label and with the blank box, the judge's top class under each.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image, ImageDraw

from clipdraw.evaluate.judge import Judge
from clipdraw.evaluate.typographic import (TOY_TEMPLATE, Placement, TypographicResult, draw_label,
                                           typographic_attack, write_report, zero_shot)
from clipdraw.toy.data import SHAPES, Scene, Shape, render

COLOR = "red"
LABELS = SHAPES   # circle, square, triangle
CENTRES = {"left": 20, "right": 44}
FIGURE_SCENES = ("small-red-circle-left", "large-red-triangle-right", "large-red-square-left")
FIGURE_PLACEMENT = Placement(0.3, "top")
TILE = 128


def write_scenes(folder: Path) -> List[Path]:
    """The twelve scenes as PNGs (64 px, the toy world's own renders), named after their caption."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shape in SHAPES:
        for size in ("small", "large"):
            for side, cx in CENTRES.items():
                caption = f"a {size} {COLOR} {shape} on the {side}"
                path = folder / f"{size}-{COLOR}-{shape}-{side}.png"
                Image.fromarray(render(Scene("single", (Shape(shape, COLOR, size, cx, 32),), caption))).save(path)
                paths.append(path)
    return paths


def class_shifts(result: TypographicResult) -> Dict[str, float]:
    """Per class, the mean change of its probability from unlabelled to labelled."""
    before = dict(zip(dict.fromkeys(r["image"] for r in result.rows), result.probabilities_before))
    return {c: float(np.mean([r["probabilities_after"][c] - before[r["image"]][c] for r in result.rows]))
            for c in result.classes}


def tile(image: Image.Image, caption: str) -> Image.Image:
    canvas = Image.new("RGB", (TILE + 8, TILE + 36), "white")
    canvas.paste(image.resize((TILE, TILE), Image.NEAREST), (4, 4))
    draw = ImageDraw.Draw(canvas)
    for n, line in enumerate(caption.split("\n")):
        draw.text((6, TILE + 8 + 13 * n), line, fill=(0, 0, 0))
    return canvas


def figure(paths: List[Path], judge: Judge, classes: List[str], out: Path) -> Path:
    """Rows of scenes; columns: unlabelled, each label at FIGURE_PLACEMENT, the blank box."""
    text_embeds = judge.embed_texts([TOY_TEMPLATE.replace("{}", c) for c in classes])
    rows = []
    for path in (p for name in FIGURE_SCENES for p in paths if p.stem == name):
        scene = Image.open(path).convert("RGB")
        variants = [(scene, "unlabelled")] + [(draw_label(scene, label, FIGURE_PLACEMENT)[0], f'"{label}"')
                                              for label in LABELS]
        variants.append((draw_label(scene, "square", FIGURE_PLACEMENT, blank=True)[0], "blank box"))
        probabilities = zero_shot(judge, [v for v, _ in variants], text_embeds)
        tiles = [tile(v, f"{what}\n-> {classes[int(p.argmax())]} {p.max():.2f}")
                 for (v, what), p in zip(variants, probabilities)]
        rows.append(np.concatenate([np.asarray(t) for t in tiles], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/typographic-toy"))
    parser.add_argument("--eval-model", default="toy-judge")
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args()
    paths = write_scenes(args.out / "scenes")
    images = [Image.open(p).convert("RGB") for p in paths]
    judge = Judge.load(args.eval_model, "cpu")
    classes = [f"{COLOR} {shape}" for shape in SHAPES]
    print("| label | flipped to its class (of eligible) | blank-box flip rate | top class changed | "
          + " | ".join(f"mean change of P({c})" for c in classes) + " | word effect |\n"
          + "|---" * (5 + len(classes)) + "|")
    for label in LABELS:
        result = typographic_attack(images, classes, label, judge, names=[p.stem for p in paths])
        report = write_report(result, args.out / label)
        s, shifts = result.summary[0], class_shifts(result)
        print(f"| {label} | {s['flipped_to_label']}/{s['eligible']} ({s['flip_rate']:.0%}) | "
              f"{s['blank_flip_rate']:.0%} | {s['changed']}/{s['pairs']} ({s['change_rate']:.0%}) | "
              + " | ".join(f"{shifts[c]:+.3f}" for c in classes) + f" | {s['word_effect']:+.3f} |")
        print(f"  report: {report['html']}", flush=True)
    if args.figure is not None:
        print(f"figure: {figure(paths, judge, classes, args.figure)}")


if __name__ == "__main__":
    main()
