"""Counting faces in frames, to find the iteration where a face appears and where a second
one creeps in (the seed article saw Steve Jobs' face by iteration 1250 and another person's
face beside it from 1400 on).

OpenCV's bundled Haar cascade for frontal faces does the counting: no download, no learned
weights of ours, fast on a CPU. OpenCV 5 no longer ships the cascades, hence the pin below 5
in the ``eval`` extra. It is a coarse detector: it misses profiles and finds faces in some
textures, so the counts are a signal to look at the frames, not ground truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..errors import ClipdrawError

CASCADE = "haarcascade_frontalface_default.xml"
INSTALL_HINT = "pip install 'clipdraw[eval]' (or pip install 'opencv-python-headless<5')"
Box = Tuple[int, int, int, int]   # x, y, width, height


def import_cv2():
    """OpenCV, or one line saying how to get it."""
    try:
        import cv2  # noqa: PLC0415
    except ImportError:
        raise ClipdrawError(f"counting faces needs OpenCV: {INSTALL_HINT}; or pass --no-faces") from None
    return cv2


class FaceCounter:
    """Frontal faces in an image by OpenCV's Haar cascade; load once, call per frame."""

    def __init__(self, min_size_fraction: float = 0.08, neighbours: int = 5):
        cv2 = import_cv2()
        folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
        path = Path(folder) / CASCADE if folder else None
        if path is None or not path.is_file():
            raise ClipdrawError(f"this OpenCV ({cv2.__version__}) ships no {CASCADE}: OpenCV 5 dropped the "
                                f"Haar cascades; {INSTALL_HINT}")
        self.cv2 = cv2
        self.classifier = cv2.CascadeClassifier(str(path))
        if self.classifier.empty():
            raise ClipdrawError(f"OpenCV could not load its face cascade {path}")
        self.min_size_fraction, self.neighbours = min_size_fraction, neighbours

    def detect(self, image: Image.Image) -> List[Box]:
        """Face boxes, largest first. Faces smaller than ``min_size_fraction`` of the shorter
        side (at least 20 px) are ignored: at that size the cascade mostly finds texture."""
        grey = np.asarray(image.convert("L"))
        side = max(20, int(round(min(grey.shape) * self.min_size_fraction)))
        found = self.classifier.detectMultiScale(self.cv2.equalizeHist(grey), scaleFactor=1.1,
                                                 minNeighbors=self.neighbours, minSize=(side, side))
        boxes = [tuple(int(v) for v in box) for box in (found if len(found) else [])]
        return sorted(boxes, key=lambda b: -b[2] * b[3])

    def count(self, image: Image.Image) -> int:
        return len(self.detect(image))


def first_iteration(iterations: Sequence[int], counts: Sequence[int], at_least: int) -> Optional[int]:
    """The first saved iteration whose frame shows ``at_least`` faces (None if none does)."""
    for iteration, count in zip(iterations, counts):
        if count >= at_least:
            return int(iteration)
    return None
