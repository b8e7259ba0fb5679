"""An analytic judge for the toy world: reads shapes off an image, no learned model involved.

The benchmark needs to decide whether a generated image shows what its prompt asks. A learned
scorer (CLIP, a classifier) would share the blind spots of the models under test, so this judge
is plain image analysis instead: classify pixels to the known palette, find connected blobs,
name each blob's shape from its silhouette, and check the caption's requirements against them.
Because the toy world is fully known (data.py), every rule here can be checked against it.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from clipdraw.toy.data import BACKGROUND, COLORS, IMAGE_SIZE, PLURALS, render, scene_at
from clipdraw.toy.specs import WORD_FOR_NUMBER, Detection, ObjectSpec, Spec, parse_caption  # noqa: F401 (parse_caption: the judge's API)

# --- tunables (pixels are in 64x64 image units) -------------------------------------------------
COLOR_THRESHOLD = 80.0   # RGB distance beyond which a pixel is "unknown" (blurred edge, artefact)
MIN_AREA = 20            # blobs smaller than this are noise, not objects (a small triangle is ~100 px)
SIZE_THRESHOLD = 23.0    # bounding-box side separating small (18 px) from large (28 px)
POSITION_MARGIN = 4.0    # "left" means cx < 32 - margin; data.py keeps small/large centres <= 21
RELATION_MIN_GAP = 10.0  # main-axis centre gap needed for "above"/"left of"; data.py's gap is >= 22

_CENTRE = IMAGE_SIZE / 2
_PALETTE_NAMES: Tuple[str, ...] = tuple(COLORS)
_PALETTE = np.array([COLORS[c] for c in _PALETTE_NAMES] + [BACKGROUND], dtype=np.float32)
_BACKGROUND_INDEX = len(_PALETTE_NAMES)
_UNKNOWN = -1

# --- image -> detections ------------------------------------------------------------------------

def _as_rgb64(image: np.ndarray) -> np.ndarray:
    """Any HxWx3/4 (or 3xHxW, or grey) image, uint8 or float in [0,1], as float32 64x64x3 in 0..255.

    Generated images come at other resolutions; box resampling averages pixels, which also halves
    noise, so the thresholds below are tuned once for 64x64.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    if arr.shape[-1] not in (3, 4) and arr.shape[0] in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
        if arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255)
    if arr.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        pil = Image.fromarray(np.round(arr).astype(np.uint8))
        arr = np.asarray(pil.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX))
    return arr.astype(np.float32)


def _pixel_classes(rgb: np.ndarray) -> np.ndarray:
    """Colour index, background, or _UNKNOWN per pixel, reading each pixel as a background/colour mix.

    Blurry or anti-aliased edges are blends of one colour with the background, so each pixel is
    projected onto the segment from BACKGROUND to every palette colour: the colour whose segment
    passes closest wins, and the pixel counts as that colour when it is at least half of it. This
    puts blurred edges where the true edge is, instead of eroding shapes (which rounds squares).
    Pixels far from every segment (artefacts, colours not in the palette) are unknown.
    """
    offset = rgb - _PALETTE[_BACKGROUND_INDEX]                          # (H, W, 3)
    vectors = _PALETTE[:_BACKGROUND_INDEX] - _PALETTE[_BACKGROUND_INDEX]  # (K, 3)
    alpha = np.einsum("hwc,kc->hwk", offset, vectors) / (vectors ** 2).sum(axis=1)
    alpha = np.clip(alpha, 0.0, 1.25)
    residual = np.linalg.norm(offset[:, :, None, :] - alpha[..., None] * vectors, axis=-1)
    best = residual.argmin(axis=-1)
    best_alpha = np.take_along_axis(alpha, best[..., None], axis=-1)[..., 0]
    cls = np.where(best_alpha >= 0.5, best, _BACKGROUND_INDEX)
    cls[residual.min(axis=-1) > COLOR_THRESHOLD] = _UNKNOWN
    return cls


def _majority(cls: np.ndarray) -> np.ndarray:
    """3x3 majority vote on the class map: removes isolated noise pixels and ragged edge pixels
    (which would stretch bounding boxes), while a pixel with no clear majority keeps its class."""
    h, w = cls.shape
    padded = np.pad(cls, 1, mode="edge")
    labels = np.arange(-1, _BACKGROUND_INDEX + 1)
    votes = np.zeros((len(labels), h, w), dtype=np.int8)
    for dr in range(3):
        for dc in range(3):
            window = padded[dr:dr + h, dc:dc + w]
            votes += window[None] == labels[:, None, None]
    winner = labels[votes.argmax(axis=0)]
    return np.where(votes.max(axis=0) >= 5, winner, cls)


def components(mask: np.ndarray, diagonal: bool = False) -> List[Tuple[np.ndarray, np.ndarray]]:
    """4-connected (``diagonal``: 8-connected) components of a boolean mask, as (rows, cols) index arrays.

    A plain stack flood fill: scipy is not a dependency, and at 64x64 this costs about a millisecond.
    """
    steps = ((-1, 0), (1, 0), (0, -1), (0, 1)) + (((-1, -1), (-1, 1), (1, -1), (1, 1)) if diagonal else ())
    h, w = mask.shape
    seen = ~mask.copy()
    found = []
    for start in zip(*np.nonzero(mask)):
        r0, c0 = int(start[0]), int(start[1])
        if seen[r0, c0]:
            continue
        seen[r0, c0] = True
        stack, rows, cols = [(r0, c0)], [], []
        while stack:
            r, c = stack.pop()
            rows.append(r)
            cols.append(c)
            for rr, cc in ((r + dr, c + dc) for dr, dc in steps):
                if 0 <= rr < h and 0 <= cc < w and not seen[rr, cc]:
                    seen[rr, cc] = True
                    stack.append((rr, cc))
        found.append((np.array(rows), np.array(cols)))
    return found


def _convex_fill(blob: np.ndarray) -> np.ndarray:
    """Fill each row's and column's span and intersect them: every toy shape is convex, so this
    restores pixels lost to noise or blur inside the silhouette without growing it."""
    rows = np.zeros_like(blob)
    cols = np.zeros_like(blob)
    for r in np.nonzero(blob.any(axis=1))[0]:
        idx = np.nonzero(blob[r])[0]
        rows[r, idx[0]:idx[-1] + 1] = True
    for c in np.nonzero(blob.any(axis=0))[0]:
        idx = np.nonzero(blob[:, c])[0]
        cols[idx[0]:idx[-1] + 1, c] = True
    return rows & cols


def _shape_of(blob: np.ndarray) -> str:
    """Name a filled silhouette (cropped to its bounding box) from three cues.

    fill ratio of the box: square ~1, circle ~pi/4, triangle ~1/2. Triangles in this world point
    up, so their top rows are much narrower than their bottom rows; circles and squares are
    symmetric. Squares fill their corners, circles leave them empty.
    """
    h, w = blob.shape
    fill = blob.mean()
    band = max(1, int(round(h * 0.25)))
    top, bottom = blob[:band].mean(), blob[-band:].mean()
    taper = top / max(bottom, 1e-6)
    k = max(1, int(round(min(h, w) * 0.2)))
    corners = np.mean([blob[:k, :k].mean(), blob[:k, -k:].mean(), blob[-k:, :k].mean(), blob[-k:, -k:].mean()])
    if taper < 0.6 and fill < 0.85:
        return "triangle"
    # Clean renders score ~0 (circle) and ~1 (square); blurred, noisy ones stay below 0.15 and
    # above 0.35 respectively, so 0.25 splits them.
    squareness = 0.5 * (fill - 0.785) / (1 - 0.785) + 0.5 * (corners - 0.1) / (0.9 - 0.1)
    return "square" if squareness > 0.25 else "circle"


def detect(image: np.ndarray) -> List[Detection]:
    """Every object in the image, left-to-right then top-to-bottom.

    Steps: resize to 64x64 (box filter), label pixels with the nearest palette colour (unknown
    when nothing is close), take 4-connected blobs per colour, drop blobs under MIN_AREA, fill the
    blob's convex spans, then read shape from the silhouette and size from the bounding box.
    """
    cls = _majority(_pixel_classes(_as_rgb64(image)))
    detections = []
    for index, color in enumerate(_PALETTE_NAMES):
        mask = cls == index
        if mask.sum() < MIN_AREA:
            continue
        for rows, cols in components(mask):
            if len(rows) < MIN_AREA:
                continue
            r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
            blob = np.zeros((r1 - r0 + 1, c1 - c0 + 1), dtype=bool)
            blob[rows - r0, cols - c0] = True
            blob = _convex_fill(blob)
            side = max(blob.shape)
            detections.append(Detection(
                shape=_shape_of(blob), color=color, size="large" if side > SIZE_THRESHOLD else "small",
                cx=float(c0 + c1 + 1) / 2, cy=float(r0 + r1 + 1) / 2, area=int(blob.sum())))
    return sorted(detections, key=lambda d: (d.cx, d.cy))


# --- checking -----------------------------------------------------------------------------------

def _position_ok(det: Detection, position: str) -> bool:
    """Along the region's main axis only, as data.py places objects (cross axis is unconstrained)."""
    return {"left": det.cx < _CENTRE - POSITION_MARGIN, "right": det.cx > _CENTRE + POSITION_MARGIN,
            "top": det.cy < _CENTRE - POSITION_MARGIN, "bottom": det.cy > _CENTRE + POSITION_MARGIN}[position]


def _relation_ok(a: Detection, b: Detection, relation: str) -> bool:
    """a <relation> b along the main axis with a clear gap.

    No cross-axis rule: data.py lets the cross offset reach ~1.6x the main gap (see report), so
    "the main axis dominates" would reject valid training scenes.
    """
    return {"above": b.cy - a.cy, "below": a.cy - b.cy,
            "left of": b.cx - a.cx, "right of": a.cx - b.cx}[relation] >= RELATION_MIN_GAP


def _assignments(objects: Sequence[ObjectSpec], dets: Sequence[Detection]):
    """Every one-to-one assignment of detections to required objects (objects[i] <- dets[result[i]])."""
    def extend(i: int, used: Tuple[int, ...]):
        if i == len(objects):
            yield used
            return
        for j, det in enumerate(dets):
            if j not in used and objects[i].matches(det):
                yield from extend(i + 1, used + (j,))
    return extend(0, ())


def check(spec: Spec, detections: Sequence[Detection]) -> bool:
    """Whether these detections show exactly what spec asks: the same number of objects, each
    matching one required object, plus the stated position or relation. Extra objects fail."""
    if len(detections) != spec.count:
        return False
    for assignment in _assignments(spec.objects, detections):
        chosen = [detections[j] for j in assignment]
        if spec.position is not None and not _position_ok(chosen[0], spec.position):
            continue
        if spec.relation is not None and not _relation_ok(chosen[0], chosen[1], spec.relation):
            continue
        return True
    return False


def satisfies(spec_or_caption: Union[Spec, str], image: np.ndarray) -> bool:
    """Whether the image shows what the caption (or a parsed Spec) asks; see check() for the rules."""
    spec = parse_caption(spec_or_caption) if isinstance(spec_or_caption, str) else spec_or_caption
    return check(spec, detect(image))


def _noun(det: Detection, size: bool = False) -> str:
    words = ([det.size] if size else []) + [det.color, det.shape]
    return ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)


def describe_detections(detections: Sequence[Detection]) -> str:
    """describe() for detections already in hand."""
    dets = list(detections)
    if not dets:
        return "nothing found"
    if len(dets) == 1:
        det = dets[0]
        dx, dy = det.cx - _CENTRE, det.cy - _CENTRE
        if abs(dx) >= abs(dy):
            position = "left" if dx < 0 else "right"
        else:
            position = "top" if dy < 0 else "bottom"
        if _position_ok(det, position):
            return f"{_noun(det, size=True)} on the {position}"
        return _noun(det, size=True)
    kinds = {(d.color, d.shape) for d in dets}
    if len(kinds) == 1:
        color, shape = kinds.pop()
        return f"{WORD_FOR_NUMBER.get(len(dets), str(len(dets)))} {color} {PLURALS[shape]}"
    if len(dets) == 2:
        a, b = dets
        vertical = abs(a.cy - b.cy) >= abs(a.cx - b.cx)
        if vertical:
            a, b = (a, b) if a.cy <= b.cy else (b, a)
            relation = "above"
        else:
            a, b = (a, b) if a.cx <= b.cx else (b, a)
            relation = "left of"
        if _relation_ok(a, b, relation):
            return f"{_noun(a)} {relation} {_noun(b)}"
    groups: Dict[Tuple[str, str], int] = {}
    for d in dets:
        groups[(d.color, d.shape)] = groups.get((d.color, d.shape), 0) + 1
    phrases = [f"a {c} {s}" if n == 1 else f"{WORD_FOR_NUMBER.get(n, str(n))} {c} {PLURALS[s]}"
               for (c, s), n in groups.items()]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def describe(image: np.ndarray) -> str:
    """A caption-like account of what the judge sees, for reports and for debugging rejections.

    It is written in the caption grammar, so parse_caption(describe(img)) works and the image
    satisfies its own description.
    """
    return describe_detections(detect(image))


def agreement(scene) -> bool:
    """Whether the judge accepts a scene's own caption on its clean render (should be always)."""
    return satisfies(scene.caption, render(scene))


def measure_accuracy(n: int, seed: int, split: str) -> float:
    """Fraction of the first n scenes of (seed, split) whose clean render satisfies its caption."""
    if n <= 0:
        raise ValueError("n must be positive")
    return sum(agreement(scene_at(i, seed, split)) for i in range(n)) / n
