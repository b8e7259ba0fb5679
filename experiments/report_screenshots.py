"""Screenshots of the HTML reports as a browser draws them: a toy probe, a toy compare and a toy
typographic attack are run (offline, small), then probe.html, compare.html and typographic.html
are drawn by headless Chromium into PNGs to look at (a table too wide, a plot that hides its
line, an image that does not load).

    python experiments/report_screenshots.py [--out outputs/report-screenshots] [--iters 60] [--save-every 10]

Needs ``chromium`` (Debian: apt-get install -y chromium) or ``google-chrome`` on PATH.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> Optional[str]:
    """The first headless-capable Chromium on PATH, or None."""
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 8000) -> Path:
    """``page`` drawn at ``width`` into ``png``, its blank bottom cut off (Chromium draws the
    window's whole ``height``, however long the page is)."""
    browser = find_chromium()
    if browser is None:
        raise SystemExit("no chromium on PATH: apt-get install -y chromium (Debian) or install google-chrome")
    with tempfile.TemporaryDirectory() as profile:   # no user profile read or written
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={png.resolve()}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))
    drawn = np.flatnonzero((pixels < 250).any(axis=(1, 2)))
    bottom = min(len(pixels), int(drawn[-1]) + 20) if len(drawn) else len(pixels)
    Image.fromarray(pixels[:bottom]).save(png)
    return png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/report-screenshots"))
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--save-every", type=int, default=10)
    args = parser.parse_args()
    clipdraw = [sys.executable, "-m", "clipdraw"]
    common = ["--model", "toy", "--iters", str(args.iters), "--save-every", str(args.save_every), "--device", "cpu",
              "--quiet"]
    prompts = args.out / "prompts.txt"
    args.out.mkdir(parents=True, exist_ok=True)
    prompts.write_text("[single]\na red circle\na blue square\n[relation]\na red circle above a blue square\n",
                       encoding="utf-8")
    subprocess.run([*clipdraw, "probe", str(ROOT / "experiments" / "probes" / "toy_shapes.txt"), "--templates",
                    "a {}", "--templates", "{}", *common, "--out", str(args.out / "probe")], check=True)
    subprocess.run([*clipdraw, "compare", str(prompts), "--per-prompt", "2", *common,
                    "--out", str(args.out / "compare")], check=True)
    sys.path.insert(0, str(ROOT / "experiments"))
    from typographic_toy import write_scenes  # noqa: PLC0415  (experiments/ is not a package)

    scenes = write_scenes(args.out / "scenes")[::3]   # four of the twelve
    subprocess.run([*clipdraw, "typographic", *map(str, scenes), "--classes", "red circle,red square,red triangle",
                    "--label", "square", "--model", "toy", "--device", "cpu", "--quiet",
                    "--out", str(args.out / "typographic")], check=True)
    for kind in ("probe", "compare", "typographic"):
        print(screenshot(args.out / kind / f"{kind}.html", args.out / f"{kind}.png"))


if __name__ == "__main__":
    main()
