"""``clipdraw toy ...``: judge an image with the analytic judge, or train the toy world again."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import click

from ..cli_checks import FolderPath
from ..config import TOY_STAGES, check_positive, check_seed
from ..errors import ClipdrawError


@click.group()
def toy() -> None:
    """The mini DALL-E world shipped with clipdraw: shapes data, tiny dVAE, CLIP and transformer."""


@toy.command("judge")
@click.argument("image", type=click.Path(path_type=Path))
@click.argument("caption")
def toy_judge(image: Path, caption: str) -> None:
    """Say whether IMAGE shows CAPTION, by the toy world's analytic judge (no learned model).

    Prints the verdict and what the judge sees; exits 0 when it accepts, 1 when it rejects.
    """
    from .judge import check, describe_detections, detect, parse_caption

    try:
        spec = parse_caption(caption)
    except ValueError:
        raise ClipdrawError(f"the toy judge cannot read {caption!r}: it reads captions such as 'a red circle', "
                            "'two blue squares' or 'a red circle above a green square'") from None
    import numpy as np

    from ..io import load_image

    picture = np.asarray(load_image(image))
    if image.suffix.lower() == ".gif":   # progress.gif: 256 colours, chosen per frame
        click.echo("clipdraw: note: a GIF keeps 256 colours, which can change the colours the judge reads; "
                   "judge the run's final.png or frame_*.png", err=True)
    detections = detect(picture)
    seen = describe_detections(detections)
    if check(spec, detections):
        click.echo(f"accepted: {caption!r}; the judge sees {seen}")
        return
    click.echo(f"rejected: {caption!r}; the judge sees {seen}")
    sys.exit(1)


TOY_SCENE_MAX_SIZE = 4096   # 48 MB of pixels; the toy world draws at 64


@toy.command("scene")
@click.argument("caption")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Where the objects are placed.")
@click.option("--size", type=click.IntRange(min=1, max=TOY_SCENE_MAX_SIZE), default=64, show_default=True,
              help="Image side in pixels.")
def toy_scene(caption: str, out: Path, seed: int, size: int) -> None:
    """Render CAPTION as a toy scene into the PNG file OUT: an image to edit (clipdraw edit), start
    from (--init-image) or aim at (--image-prompt) in the toy world."""
    from PIL import Image

    from ..io import atomic_write_bytes
    from ..outputs import png_bytes
    from .data import render
    from .specs import scene_for

    check_seed(seed)
    if out.is_dir():
        raise ClipdrawError(f"{out} is a folder: give the PNG file to write")
    if out.suffix.lower() != ".png":
        raise ClipdrawError(f"{out} does not end in .png: the scene is written as a PNG")
    if out.parent.exists() and not out.parent.is_dir():
        raise ClipdrawError(f"cannot write {out}: {out.parent} is a file, not a folder")
    if not out.parent.is_dir():
        raise ClipdrawError(f"folder {out.parent} does not exist")
    try:
        scene = scene_for(caption, seed)
    except ValueError:
        raise ClipdrawError(f"the toy world cannot draw {caption!r}: it draws captions such as 'a red circle', "
                            "'two blue squares' or 'a red circle above a green square'") from None
    atomic_write_bytes(out, png_bytes(Image.fromarray(render(scene, size)), {"caption": caption, "seed": str(seed)}))
    click.echo(str(out))


@toy.command("train")
@click.option("--out", type=FolderPath(), default=None,
              help="Folder for the weights (default: $CLIPDRAW_TOY_WEIGHTS, else the package's own; "
                   "with --coco: ./coco-transformer).")
@click.option("--stages", default=",".join(TOY_STAGES), show_default=True,
              help="Which models to train (toy world only).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Multiply every stage's step count (0.01 for a smoke run).")
@click.option("--guide-rounds", type=click.IntRange(min=0), default=None,
              help="Rounds in which the guide trains on its own drawings, each frame named by the analytic judge "
                   "(13-16 minutes each on 2 cores; 0: none; measured in docs/toy-guidance.md)  "
                   "[default: the recipe's, TrainConfig.clip_rounds].")
@click.option("--drawing-workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Draw the guide's rounds in N processes of one thread each: faster on N cores, and the same "
                   "drawings for any N, but not those of the shipped recipe, drawn on this process's threads (0); "
                   "a guide so trained picked worse (docs/toy-world.md).")
@click.option("--coco", type=click.Path(path_type=Path), default=None,
              help="Train the transformer on a real image-caption set: a COCO captions JSON file.")
@click.option("--images", type=click.Path(path_type=Path), default=None, help="With --coco: the folder of its images.")
@click.option("--filter", "keywords", default=None,
              help="With --coco: keep captions containing any of these comma-separated words (e.g. mountain,beach).")
@click.option("--encoder", default=None,
              help="With --coco: dVAE encoder name or encoder.pkl path  [default: openai].")
@click.option("--size", type=click.IntRange(min=1), default=None,
              help="With --coco: image side in pixels for the encoder, a multiple of 8  [default: 256].")
@click.option("--device", default=None, help="With --coco: auto, cpu or cuda  [default: auto].")
@click.option("--offline", is_flag=True, help="With --coco: never download the encoder; use a cached or given file.")
@click.option("--quiet", "-q", is_flag=True)
def toy_train(out: Optional[Path], stages: str, seed: int, scale: float, guide_rounds: Optional[int],
              drawing_workers: int, coco: Optional[Path],
              images: Optional[Path], keywords: Optional[str], encoder: Optional[str], size: Optional[int],
              device: Optional[str], offline: bool, quiet: bool) -> None:
    """Train the toy world from scratch on the CPU (deterministic by seed), or with --coco the
    mini transformer over the real dVAE's tokens of a COCO-format image-caption set."""
    check_positive("--scale", scale)
    check_seed(seed)
    if coco is not None:
        if guide_rounds is not None or drawing_workers:
            raise ClipdrawError(f"{'--guide-rounds' if guide_rounds is not None else '--drawing-workers'} trains "
                                "the toy world's guide: it does not go with --coco")
        _train_coco(coco, images, keywords, encoder or "openai", size or 256, device or "auto", offline,
                    out or Path("coco-transformer"), seed, scale, quiet)
        return
    given = [flag for flag, value in (("--images", images), ("--filter", keywords), ("--encoder", encoder),
                                      ("--size", size), ("--device", device), ("--offline", offline or None))
             if value is not None]
    if given:
        raise ClipdrawError(f"{given[0]} is for training on a caption set: it needs --coco")
    names = tuple(s.strip() for s in stages.split(",") if s.strip())
    unknown = [s for s in names if s not in TOY_STAGES]
    if unknown or not names:
        raise ClipdrawError(f"unknown stage {unknown[0] if unknown else stages!r}: expected {', '.join(TOY_STAGES)}")
    from ..outputs import check_output_root
    from .models import weights_dir
    from .train import scaled_config, train_all

    target = out or weights_dir()
    check_output_root(target)
    config = replace(scaled_config(scale, seed, guide_rounds), drawing_workers=drawing_workers)
    summary = train_all(config, out=target, stages=names, progress=not quiet)
    for stage, seconds in summary["seconds"].items():
        last = [entry for entry in summary["log"] if entry["stage"] == stage][-1]
        values = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k not in ("stage", "step"))
        click.echo(f"{stage}: {seconds:.0f} s; last logged: {values}")
    click.echo(f"weights in {target}")


def _train_coco(captions: Path, images: Optional[Path], keywords: Optional[str], encoder: str, size: int, device: str,
                offline: bool, out: Path, seed: int, scale: float, quiet: bool) -> None:
    """The --coco branch of ``toy train``: argument checks here, the work in clipdraw.toy.coco."""
    if images is None:
        raise ClipdrawError("--coco needs --images DIR, the folder holding the caption set's images")
    words = None
    if keywords is not None:
        words = [w.strip() for w in keywords.split(",") if w.strip()]
        if not words:
            raise ClipdrawError(f"--filter {keywords!r} names no word: expected e.g. mountain,beach")
    if size % 8:
        raise ClipdrawError(f"--size must be a multiple of 8 (the encoder downsamples 8x), got {size}")
    from ..device import resolve_device
    from ..outputs import check_output_root
    from .coco import train_coco
    from .train import TrainConfig

    target = resolve_device(device)
    check_output_root(out)
    base = TrainConfig(seed=seed)
    config = TrainConfig(seed=seed, gpt_steps=max(1, round(base.gpt_steps * scale)))
    summary = train_coco(captions, images, words, encoder, out=out, config=config, device=target,
                         progress=not quiet, size=size, offline=offline,
                         log_fn=None if quiet else (lambda message: click.echo(f"clipdraw: {message}", err=True)))
    last = summary["log"][-1]
    click.echo(f"transformer: {summary['captions']} captions, {summary['images']} images, "
               f"{summary['image_tokens']} tokens each; {sum(summary['seconds'].values()):.0f} s; "
               f"last logged loss {last['loss']:.4f}")
    click.echo(f"weights in {out}")
