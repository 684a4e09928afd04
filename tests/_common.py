"""Constants shared by several test modules (pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"  # ../shared beside the checkout
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="shared real data not present")

# The smallest reconstruction model that exercises every module (CNN stem, encoder, decoder, heads).
TINY_MODEL = dict(patch_size=4, cnn_channels=[8, 16], enc_dim=32, enc_depth=1, enc_heads=2, dec_dim=16, dec_depth=1,
                  dec_heads=2, head_channels=8, desc_dim=8)
