"""Images coming in (init images, image prompts, images to edit) as the tensors the models take."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

from .io import center_square, load_image


def read_image(path: Union[str, Path], size: int, role: str = "image") -> torch.Tensor:
    """``path`` -> (3, size, size) in [0, 1]: upright (EXIF), RGB, the shorter side resized to
    ``size`` and the centre cut out, so nothing is stretched. A bad file is one ClipdrawError
    line naming ``role`` ("init image", "image prompt", ...)."""
    square = center_square(load_image(path, role), size, Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(square, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
