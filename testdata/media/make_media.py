#!/usr/bin/env python3
"""Writes the small image files kiln-media's decoder tests read (testdata/media/).

  cmyk_8x8.jpg   an 8x8 CMYK JPEG (C 0, M 255, Y 255, K 0: red), as Pillow writes CMYK JPEGs
                 (Adobe APP14 marker, inverted channels): the decoder must give RGB close to red.

Made with Pillow 13.0.0 (deterministic: quality 95, no subsampling):
    ~/.cache/kiln/torch-venv/bin/python testdata/media/make_media.py
"""

import os

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))

Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(
    os.path.join(HERE, "cmyk_8x8.jpg"), format="JPEG", quality=95, subsampling=0)
