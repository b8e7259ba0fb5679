"""Colorimetry of generated images: what colours do the paradigms produce, and how far are
they from the gold image's?

- colourfulness (Hasler and Suesstrunk 2003): on the opponent channels rg = R - G and
  yb = (R + G) / 2 - B of 8-bit values, M = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2).
  About 0 for grey images, 15 "slightly", 33 "moderately", 59 "quite", 82 "highly", 109 "extremely";
- HSV statistics: hue as a circular mean and its concentration (hue is an angle: the mean of
  350 and 10 degrees is 0, not 180), saturation and value means and standard deviations;
- dominant colours: k-means in RGB on a sample of pixels, seeded, so the same image gives the
  same palette;
- histogram distance: the earth mover's distance between per-channel 256-level histograms,
  which for one-dimensional histograms is the area between the cumulative distributions, in
  intensity levels (0: same colour distribution; 255: all black against all white).

Images are PIL images or (H, W, 3) uint8 arrays; numpy only.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Union

import numpy as np
from PIL import Image

ImageLike = Union[Image.Image, np.ndarray]
KMEANS_SAMPLE = 4096   # pixels clustered for the palette: enough for shares to the percent
KMEANS_ROUNDS = 25


def rgb_array(image: ImageLike) -> np.ndarray:
    """(H, W, 3) float64 array of 0-255 values."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {array.shape}")
    return array


def colourfulness(image: ImageLike) -> float:
    """Hasler and Suesstrunk's colourfulness metric M (0 for grey images)."""
    rgb = rgb_array(image)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    spread = np.sqrt(rg.std() ** 2 + yb.std() ** 2)
    offset = np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(spread + 0.3 * offset)


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """0-255 RGB -> HSV with hue in degrees [0, 360), saturation and value in [0, 1]."""
    rgb = np.asarray(rgb, dtype=np.float64) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high, low = rgb.max(-1), rgb.min(-1)
    chroma = high - low
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.select([chroma == 0, high == r, high == g],
                    [0.0, ((g - b) / safe) % 6, (b - r) / safe + 2],
                    default=(r - g) / safe + 4) * 60.0
    saturation = np.where(high > 0, chroma / np.where(high > 0, high, 1.0), 0.0)
    return np.stack([hue % 360.0, saturation, high], axis=-1)


def hsv_statistics(image: ImageLike) -> Dict[str, float]:
    """Hue circular mean (degrees, weighted by saturation so greys do not vote) and its
    concentration in [0, 1]; saturation and value mean and standard deviation."""
    hsv = rgb_to_hsv(rgb_array(image)).reshape(-1, 3)
    hue, saturation, value = np.radians(hsv[:, 0]), hsv[:, 1], hsv[:, 2]
    total = saturation.sum()
    if total > 0:
        x, y = (saturation * np.cos(hue)).sum() / total, (saturation * np.sin(hue)).sum() / total
        hue_mean, hue_concentration = float(np.degrees(np.arctan2(y, x)) % 360.0), float(np.hypot(x, y))
    else:   # a grey image has no hue
        hue_mean, hue_concentration = float("nan"), 0.0
    return {"hue_mean": hue_mean, "hue_concentration": hue_concentration,
            "saturation_mean": float(saturation.mean()), "saturation_std": float(saturation.std()),
            "value_mean": float(value.mean()), "value_std": float(value.std())}


def dominant_colors(image: ImageLike, k: int = 5, seed: int = 0) -> List[Dict[str, object]]:
    """The ``k`` main colours by k-means (k-means++ start), largest share first:
    ``[{"rgb": (r, g, b), "hex": "#rrggbb", "share": 0.42}, ...]``. Fewer when the image has
    fewer distinct colours."""
    if k < 1:
        raise ValueError("k must be at least 1")
    pixels = rgb_array(image).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    if len(pixels) > KMEANS_SAMPLE:
        pixels = pixels[rng.choice(len(pixels), KMEANS_SAMPLE, replace=False)]
    distinct = np.unique(pixels, axis=0)
    k = min(k, len(distinct))
    centers = _kmeans_plus_plus(pixels, distinct, k, rng)
    for _ in range(KMEANS_ROUNDS):
        labels = _nearest(pixels, centers)
        moved = np.array([pixels[labels == c].mean(0) if np.any(labels == c) else centers[c] for c in range(k)])
        if np.allclose(moved, centers):
            break
        centers = moved
    labels = _nearest(pixels, centers)
    shares = np.bincount(labels, minlength=k) / len(pixels)
    palette = []
    for c in np.argsort(-shares, kind="stable"):
        if shares[c] == 0:
            continue
        rgb = tuple(int(v) for v in np.clip(np.round(centers[c]), 0, 255))
        palette.append({"rgb": rgb, "hex": "#{:02x}{:02x}{:02x}".format(*rgb), "share": float(shares[c])})
    return palette


def _nearest(pixels: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return ((pixels[:, None, :] - centers[None, :, :]) ** 2).sum(-1).argmin(1)


def _kmeans_plus_plus(pixels: np.ndarray, distinct: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Spread starting centres: each next one drawn with probability ~ squared distance."""
    centers = [pixels[rng.integers(len(pixels))]]
    while len(centers) < k:
        gap = ((pixels[:, None, :] - np.array(centers)[None]) ** 2).sum(-1).min(1)
        if gap.sum() == 0:   # every pixel sits on a centre: take an unused distinct colour
            used = {tuple(c) for c in centers}
            centers.append(next(d for d in distinct if tuple(d) not in used))
            continue
        centers.append(pixels[rng.choice(len(pixels), p=gap / gap.sum())])
    return np.array(centers, dtype=np.float64)


def channel_histograms(image: ImageLike) -> np.ndarray:
    """(3, 256) normalised histograms of the R, G and B levels."""
    rgb = np.clip(np.round(rgb_array(image)), 0, 255).astype(np.int64).reshape(-1, 3)
    counts = np.stack([np.bincount(rgb[:, c], minlength=256) for c in range(3)]).astype(np.float64)
    return counts / counts.sum(1, keepdims=True)


def histogram_emd(image: ImageLike, reference: ImageLike) -> Dict[str, float]:
    """Earth mover's distance between the images' R, G and B level distributions (in levels,
    each channel and their mean); sizes may differ."""
    a, b = channel_histograms(image), channel_histograms(reference)
    per_channel = np.abs(np.cumsum(a, 1) - np.cumsum(b, 1)).sum(1)   # unit spacing between levels
    return {"emd_r": float(per_channel[0]), "emd_g": float(per_channel[1]), "emd_b": float(per_channel[2]),
            "emd": float(per_channel.mean())}


def describe(image: ImageLike, reference: Optional[ImageLike] = None, k: int = 5, seed: int = 0) -> Dict[str, object]:
    """Every colour measure of one image (and its distance to ``reference`` when given)."""
    record: Dict[str, object] = {"colourfulness": colourfulness(image), **hsv_statistics(image),
                                 "dominant": dominant_colors(image, k=k, seed=seed)}
    if reference is not None:
        record.update(histogram_emd(image, reference))
        record["colourfulness_reference"] = colourfulness(reference)
    return record
