"""Matching and pose solvers, checked end to end on exact model outputs of the analytic box room."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vibe3r import geometry
from vibe3r.errors import InputError
from vibe3r.recon.losses import gt_correspondences
from vibe3r.recon.matching import cell_centres, match_descriptors, mutual_nn
from vibe3r.recon.pose import SOLVERS, ModelPoseEstimator
from vibe3r.recon.synthetic import box_pair_batch


def test_mutual_nn_recovers_a_permutation_and_drops_one_sided_matches():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(300, 16, generator=g), dim=-1)
    perm = torch.randperm(300, generator=g)
    ia, ib, s = mutual_nn(a, a[perm], chunk=64)
    assert len(ia) == 300 and torch.equal(perm[ib], ia) and torch.allclose(s, torch.ones(300))
    # b holds two copies close to a[0]: only the closer one is mutual
    b = torch.stack([a[0], F.normalize(a[0] + 0.05 * a[1], dim=0)])
    ia, ib, _ = mutual_nn(a, b)
    assert ia.tolist() == [0] and ib.tolist() == [0]


def test_bf16_search_keeps_most_fp32_matches_and_reports_fp32_similarities():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(2000, 24, generator=g), dim=-1)
    b = F.normalize(a[torch.randperm(2000, generator=g)] + 0.3 * torch.randn(2000, 24, generator=g), dim=-1)
    ia, ib, s = mutual_nn(a, b, chunk=256)
    ja, jb, t = mutual_nn(a, b, chunk=256, dtype=torch.bfloat16)
    assert t.dtype == torch.float32
    assert torch.allclose(t, (a[ja] * b[jb]).sum(-1), atol=1e-6)  # recomputed exactly, not bf16-rounded
    same = set(zip(ia.tolist(), ib.tolist())) & set(zip(ja.tolist(), jb.tolist()))
    assert len(same) > 0.97 * len(ia) and len(ja) > 0.97 * len(ia)


def test_cell_centres_follow_the_pixel_centre_convention():
    c = cell_centres(2, 3, 4, 6)  # stride 2: cell (0,0) covers pixels 0..1 -> centre 0.5
    assert c[0].tolist() == [0.5, 0.5] and c[-1].tolist() == [4.5, 2.5]


@pytest.fixture(scope="module")
def pair():
    batch = box_pair_batch(B=1, H=48, W=64, seed=2, gap=4)
    proj = torch.randn(3, 32, generator=torch.Generator().manual_seed(1)) * 5

    def desc(pts):  # a descriptor that is a function of the 3D point (camera-1 frame)
        return F.normalize(torch.cat([torch.sin(pts @ proj), torch.cos(pts @ proj)], -1), dim=-1)

    return batch, desc


@pytest.mark.parametrize("coarse,precision", [(1, "fp32"), (2, "fp32"), (1, "bf16"), (2, "bf16")])
def test_matches_agree_with_ground_truth_correspondences(pair, coarse, precision):
    batch, desc = pair
    kp1, kp2, _ = match_descriptors(desc(batch["pts11"][0]), desc(batch["pts21"][0]), (48, 64), coarse_factor=coarse,
                                    precision=precision)
    p, q = gt_correspondences(batch, 0)
    gt = {tuple(x): y for x, y in zip(p.long().tolist(), q.tolist())}
    hits = [torch.tensor(gt[tuple(a)]) for a in kp1.long().tolist() if tuple(a) in gt]
    found = torch.stack([b for a, b in zip(kp1.long().tolist(), kp2) if tuple(a) in gt])
    assert len(hits) > 200
    err = (torch.stack(hits) - found).norm(dim=-1)
    assert (err < 1.5).float().mean() > 0.9


class _GTModel(torch.nn.Module):
    """Returns exact outputs for the pair (and for the swapped pair), whatever the images."""

    def __init__(self, batch, desc):
        super().__init__()
        self.config = type("C", (), {"patch_size": 8})()
        pts22 = geometry.unproject_depth(batch["depth2"][0], batch["K2"][0])
        pts12 = geometry.transform_points(batch["T21"][0].double(), batch["pts11"][0].double()).float()
        c1 = batch["valid1"][0].float() * 5 + 1
        c2 = batch["valid2"][0].float() * 5 + 1
        self.img1 = batch["img1"]
        self.fwd = {"pts11": batch["pts11"], "pts21": batch["pts21"], "conf1": c1[None], "conf2": c2[None],
                    "desc1": desc(batch["pts11"])[None][0], "desc2": desc(batch["pts21"])[None][0]}
        self.swp = {"pts11": pts22[None], "pts21": pts12[None], "conf1": c2[None], "conf2": c1[None],
                    "desc1": self.fwd["desc2"], "desc2": self.fwd["desc1"]}

    def forward(self, x0, x1):
        return self.fwd if torch.allclose(x0, self.img1, atol=1 / 255) else self.swp


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_recovers_the_ground_truth_pose(pair, solver):
    batch, desc = pair
    est = ModelPoseEstimator(_GTModel(batch, desc), solver=solver, ransac="usac_accurate")
    to_u8 = lambda x: (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # noqa: E731
    K = batch["K1"][0].double().numpy()
    R, t, n = est(to_u8(batch["img1"]), to_u8(batch["img2"]), K, batch["K2"][0].double().numpy())
    T = batch["T21"][0].double()
    assert n > 50
    assert float(geometry.rotation_error_deg(torch.as_tensor(R), T[:3, :3])) < 0.5
    assert float(geometry.translation_direction_error_deg(torch.as_tensor(t), T[:3, 3])) < 5.0
    if solver in ("pnp", "pnp_matches", "procrustes"):  # metric solvers also get the baseline length
        assert np.linalg.norm(t) == pytest.approx(float(T[:3, 3].norm()), rel=0.05)


def test_unknown_solver_is_rejected(pair):
    with pytest.raises(InputError, match="unknown pose solver"):
        ModelPoseEstimator(_GTModel(*pair), solver="eight-point")
    with pytest.raises(InputError, match="unknown matching precision 'fp8'"):
        ModelPoseEstimator(_GTModel(*pair), precision="fp8")


def test_subpixel_refinement_reduces_match_error_of_half_resolution_descriptors(pair):
    batch, desc = pair
    pool = lambda d: F.normalize(F.avg_pool2d(d.permute(2, 0, 1)[None], 2)[0].permute(1, 2, 0), dim=-1)  # noqa: E731
    d1, d2 = pool(desc(batch["pts11"][0])), pool(desc(batch["pts21"][0]))  # 24x32 cells of a 48x64 image
    p, q = gt_correspondences(batch, 0)
    gt = {tuple(x): y for x, y in zip(p.tolist(), q.tolist())}

    def median_error(subpixel):
        kp1, kp2, _ = match_descriptors(d1, d2, (48, 64), subpixel=subpixel)
        # view-1 cell centres sit between pixels: compare with the GT partner of the nearest pixel
        errs = [torch.dist(torch.tensor(gt[k]), b) for a, b in zip(kp1.tolist(), kp2)
                if (k := (float(round(a[0] + 0.01)), float(round(a[1] + 0.01)))) in gt]
        assert len(errs) > 50
        return torch.stack(errs).median()

    assert median_error(True) < 0.8 * median_error(False)


def test_matches_without_motion_give_no_pose_instead_of_an_error():
    """A frozen video's matches all have zero motion: the essential matrix is undefined, so no pose — never
    an exception from the solver (OpenCV 5 asserts on this input)."""
    from vibe3r.recon.pose import estimate_pose_essential

    grid = np.stack(np.meshgrid(np.arange(2.0, 126, 2), np.arange(2.0, 94, 2)), -1).reshape(-1, 2)
    K = np.array([[113.5, 0, 63.5], [0, 113.5, 47.5], [0, 0, 1]])
    res = estimate_pose_essential(grid, grid.copy(), K, K)
    assert res is None or np.allclose(res[0], np.eye(3), atol=1e-6)
