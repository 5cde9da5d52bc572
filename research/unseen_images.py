"""Write test images that l335q's SAMPLES do not include, for checks on images no rule was chosen on.

  python research/unseen_images.py /tmp/unseen     # horse.png, phantom.png, motorcycle.png
then e.g. ``research/autosigma.py --images /tmp/unseen/horse.png,...``. All three ship with scikit-image
(no download): the horse silhouette (white horse on black), the Shepp-Logan phantom (400²) and the left
view of the stereo motorcycle pair (500 x 741, colour).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import skimage.data as data
import skimage.io as io

out = Path(sys.argv[1] if len(sys.argv) > 1 else "unseen")
out.mkdir(parents=True, exist_ok=True)
images = {"horse": (~data.horse()).astype(np.uint8) * 255,
          "phantom": (data.shepp_logan_phantom() * 255).astype(np.uint8),
          "motorcycle": data.stereo_motorcycle()[0]}
for name, a in images.items():
    io.imsave(out / f"{name}.png", a, check_contrast=False)
    print(out / f"{name}.png", a.shape)
