"""How good is the rewards' classical reference pose on the held-out real pairs?

The classical term of ``preference.rewards`` scores a sample by its disagreement with the two-view pose of
RootSIFT matches on the full-resolution frames (USAC). This measures that reference itself against GT on
``../shared/data/real/eval-pairs`` (native 640x480, the lists' K), i.e. the ceiling a preference signal
built on it could teach::

    .venv/bin/python bench/classical_reference.py
"""

from __future__ import annotations

from pathlib import Path

from vibe3r.eval.pairs import evaluate_pairs, format_summary
from vibe3r.preference.rewards import RewardConfig, classical_pose

EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "eval-pairs"


def main() -> None:
    cfg = RewardConfig()

    def estimate(a, b, K1, K2):  # noqa: ANN001, ANN202
        c = classical_pose(a, b, K1, K2, cfg)
        return None if c.T21 is None else (c.T21[:3, :3], c.T21[:3, 3], int(c.inliers.sum()))

    for lst in sorted(EVAL.glob("*.txt")):
        print(format_summary(evaluate_pairs(lst, estimate, 0, method_name="classical reference (RootSIFT, full res)")), flush=True)


if __name__ == "__main__":
    main()
