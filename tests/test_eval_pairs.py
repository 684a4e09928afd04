"""Pair evaluation: the essential-matrix solver, the metrics, the CLI on the real pair lists."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import roma
import torch
from _common import REAL
from typer.testing import CliRunner

from vibe3r import geometry
from vibe3r.eval import pairs as P
from vibe3r.eval.cli import app

SEVEN = REAL / "eval-pairs" / "7scenes-redkitchen-second-half.txt"
needs_real = pytest.mark.skipif(not SEVEN.is_file(), reason="shared real data not present")


def _two_view_points(seed: int = 0, n: int = 200):
    g = torch.Generator().manual_seed(seed)
    K = np.array([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])
    X0 = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor([4.0, 3.0, 3.0]) + torch.tensor([-2.0, -1.5, 2.0])
    R = roma.rotvec_to_rotmat(torch.tensor([0.05, -0.12, 0.03], dtype=torch.float64))
    t = torch.tensor([0.4, 0.05, -0.1], dtype=torch.float64)
    T = geometry.make_pose(R, t)
    uv0, _ = geometry.project(X0, K)
    uv1, _ = geometry.project(geometry.transform_points(T, X0), K)
    return uv0.numpy(), uv1.numpy(), K, T.numpy()


def test_essential_recovers_exact_pose_from_perfect_matches():
    uv0, uv1, K, T = _two_view_points()
    R, t, inl = P.estimate_pose_essential(uv0, uv1, K, K, thresh_px=1.0)
    assert float(geometry.rotation_error_deg(R, T[:3, :3])) < 0.05
    assert float(geometry.translation_direction_error_deg(t, T[:3, 3])) < 0.2  # sign resolved by cheirality
    assert inl.mean() > 0.95


def test_essential_survives_outliers_and_fails_cleanly_with_few_matches():
    uv0, uv1, K, T = _two_view_points(n=300)
    rng = np.random.default_rng(0)
    uv1 = uv1.copy()
    bad = rng.choice(300, 90, replace=False)
    uv1[bad] = rng.uniform(0, 128, (90, 2))
    R, t, inl = P.estimate_pose_essential(uv0, uv1, K, K, thresh_px=1.0)
    assert float(geometry.rotation_error_deg(R, T[:3, :3])) < 0.2
    assert not inl[bad].mean() > 0.1
    assert P.estimate_pose_essential(uv0[:4], uv1[:4], K, K) is None


def test_summary_counts_failures_as_infinite_error():
    ok = P.PairResult("a", "b", 1.0, 2.0, 0.2, 10.0, 50, False)
    bad = P.PairResult("c", "d", math.inf, math.inf, 0.1, 10.0, 0, True)
    s = P.summarize([ok, ok, bad])
    assert s["fail_pct"] == pytest.approx(100 / 3)
    assert s["median_rot"] == 1.0
    # SuperGlue's trapezoid: recall ramps 0 -> 2/3 over [0, 2] then stays at 2/3 until 5
    assert s["auc5"] == pytest.approx(100 * (0.5 * 2 * 1 / 3 + 3 * 2 / 3) / 5)
    assert math.isinf(P.summarize([ok, bad, bad])["median_rot"])


@needs_real
def test_identity_prior_on_7scenes_matches_readme(tmp_path):
    """The no-motion prior's median rotation error is the GT median rotation (README: 10.0°)."""
    out = tmp_path / "res.json"
    r = CliRunner().invoke(app, ["pairs", "--pairs", str(SEVEN), "--method", "identity", "--size", "64",
                                 "--json", "--save", str(out)])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["all"]["n"] == 100
    assert summary["all"]["median_rot"] == pytest.approx(10.0, abs=0.05)
    assert summary["baseline>=0.15"]["n"] == 62
    assert summary["all"]["auc10"] == 0.0
    per_pair = json.loads(out.read_text())["per_pair"]
    assert len(per_pair) == 100 and per_pair[0]["tdir_err"] == 90.0


@needs_real
def test_sift_on_real_pairs_beats_the_no_motion_prior(tmp_path):
    lines = SEVEN.read_text().splitlines()[:8]
    small = tmp_path / "eval-pairs" / "few.txt"
    small.parent.mkdir()
    small.write_text("\n".join(lines) + "\n")
    ev = P.evaluate_pairs(small, P.make_sift_estimator(), 128, root=REAL / "7scenes-redkitchen", method_name="sift")
    prior = P.evaluate_pairs(small, P.identity_estimator, 64, root=REAL / "7scenes-redkitchen")
    assert ev.size == (128, 96)
    assert ev.summary["median_rot"] < 0.6 * prior.summary["median_rot"]


def test_unknown_method_is_one_line_error():
    r = CliRunner().invoke(app, ["pairs", "--pairs", "x.txt", "--method", "orb"])
    assert r.exit_code != 0
    assert "unknown method 'orb'" in str(r.exception)


def test_locally_optimised_ransac_is_more_precise_on_noisy_matches():
    """The SuperGlue protocol keeps the best minimal model; USAC's local optimisation refines it."""
    errs = {"ransac": [], "usac_accurate": []}
    for seed in range(3):
        uv0, uv1, K, T = _two_view_points(seed, n=500)
        rng = np.random.default_rng(seed)
        n0, n1 = uv0 + rng.normal(0, 0.3, uv0.shape), uv1 + rng.normal(0, 0.3, uv1.shape)
        for m in errs:
            R, _, _ = P.estimate_pose_essential(n0, n1, K, K, 1.0, method=m)
            errs[m].append(float(geometry.rotation_error_deg(R, T[:3, :3])))
    assert np.mean(errs["usac_accurate"]) < 0.5 * np.mean(errs["ransac"])
