"""Losses on exact two-view geometry of the analytic box room."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vibe3r.config import ReconLossConfig
from vibe3r.recon.losses import L21, ConfLoss, InfoNCEMatching, Regr3D, build_loss, gt_correspondences
from vibe3r.recon.synthetic import box_pair_batch


@pytest.fixture(scope="module")
def batch():
    return box_pair_batch(B=2, H=24, W=32, seed=0, gap=2)


def _gt_pred(batch, scale: float = 1.0, conf: float = 2.0):
    B, H, W = batch["valid1"].shape
    return {"pts11": batch["pts11"] * scale, "pts21": batch["pts21"] * scale,
            "conf1": torch.full((B, H, W), conf), "conf2": torch.full((B, H, W), conf)}


def test_regression_is_zero_for_ground_truth_at_any_scale(batch):
    for s in (1.0, 0.3, 7.0):
        loss, _ = Regr3D(L21, "avg_dis")(_gt_pred(batch, s), batch)
        assert float(loss) < 1e-5
    loss, _ = Regr3D(L21, "none")(_gt_pred(batch, 2.0), batch)
    assert float(loss) > 0.5  # without normalisation the scale matters


def test_normalised_regression_is_scale_invariant_and_penalises_shape(batch):
    g = torch.Generator().manual_seed(0)
    noisy = _gt_pred(batch)
    noisy["pts11"] = noisy["pts11"] + 0.1 * torch.randn(noisy["pts11"].shape, generator=g)
    crit = Regr3D(L21, "avg_dis")
    a, _ = crit(noisy, batch)
    b, _ = crit({**noisy, "pts11": noisy["pts11"] * 4, "pts21": noisy["pts21"] * 4}, batch)
    assert float(a) > 0.01
    assert float(a) == pytest.approx(float(b), rel=1e-5)


def test_conf_loss_of_ground_truth_is_the_log_confidence_term(batch):
    loss, d = ConfLoss(Regr3D(L21, "avg_dis"), alpha=0.2)(_gt_pred(batch, conf=3.0), batch)
    assert float(loss) == pytest.approx(2 * -0.2 * torch.log(torch.tensor(3.0)).item(), abs=1e-5)
    # a confident wrong pixel costs more than an unconfident one
    bad = _gt_pred(batch, conf=1.5)
    bad["pts21"] = bad["pts21"].flip(1)
    worse = _gt_pred(batch, conf=10.0)
    worse["pts21"] = worse["pts21"].flip(1)
    crit = ConfLoss(Regr3D(L21, "avg_dis"), alpha=0.2)
    assert float(crit(worse, batch)[0]) > float(crit(bad, batch)[0])


def test_correspondences_land_on_the_same_3d_point(batch):
    for b in range(2):
        p, q = gt_correspondences(batch, b, tol=0.05)
        assert len(p) > 0.3 * batch["valid1"][b].numel()
        X1 = batch["pts11"][b][p[:, 1].long(), p[:, 0].long()]  # view-1 point, camera-1 frame
        qi = q.round().long()
        X2 = batch["pts21"][b][qi[:, 1], qi[:, 0]]  # view-2 point at q, camera-1 frame
        # nearest-pixel rounding moves the point by at most half a pixel footprint
        assert (X1 - X2).norm(dim=-1).median() < 0.05


def _world_descriptors(pts: torch.Tensor, proj: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """Descriptors that are a function of the 3D point (camera-1 frame): consistent across views."""
    enc = torch.cat([torch.sin(pts @ proj), torch.cos(pts @ proj)], -1)  # B,H,W,2F
    if stride > 1:
        enc = F.avg_pool2d(enc.permute(0, 3, 1, 2), stride).permute(0, 2, 3, 1)
    return F.normalize(enc, dim=-1)


@pytest.mark.parametrize("stride,n_neg", [(1, 0), (2, 64)])
def test_infonce_prefers_correct_matches(batch, stride, n_neg):
    proj = torch.randn(3, 16, generator=torch.Generator().manual_seed(1)) * 6
    good = {"desc1": _world_descriptors(batch["pts11"], proj, stride), "desc2": _world_descriptors(batch["pts21"], proj, stride)}
    shuffled = {"desc1": good["desc1"], "desc2": good["desc2"].flip(1, 2)}
    crit = InfoNCEMatching(temperature=0.05, n_samples=128, n_neg=n_neg)
    lg, dg = crit(good, batch, generator=torch.Generator().manual_seed(0))
    lb, db = crit(shuffled, batch, generator=torch.Generator().manual_seed(0))
    assert float(lg) < 0.5 * float(lb)
    assert dg["match_acc"] > 0.8 > db["match_acc"]
    assert dg["match_n"] == 128


def test_infonce_gradient_pulls_partners_together(batch):
    g = torch.Generator().manual_seed(0)
    d1 = F.normalize(torch.randn(2, 24, 32, 8, generator=g), dim=-1).requires_grad_()
    d2 = F.normalize(torch.randn(2, 24, 32, 8, generator=g), dim=-1).requires_grad_()
    crit = InfoNCEMatching(0.1, 64)
    opt = torch.optim.SGD([d1, d2], lr=5.0)
    first = None
    for _ in range(30):
        loss, _ = crit({"desc1": F.normalize(d1, dim=-1), "desc2": F.normalize(d2, dim=-1)}, batch, generator=torch.Generator().manual_seed(0))
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first


def test_weighted_sum_reports_every_term(batch):
    cfg = ReconLossConfig(regr_weight=1.0, match_weight=2.0, match_samples=32)
    loss_fn = build_loss(cfg)
    pred = _gt_pred(batch)
    proj = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    pred["desc1"] = _world_descriptors(batch["pts11"], proj)
    pred["desc2"] = _world_descriptors(batch["pts21"], proj)
    loss, d = loss_fn(pred, batch, generator=torch.Generator().manual_seed(0))
    assert {"regr_loss", "match_loss", "match_acc", "conf_1", "loss"} <= set(d)
    assert float(loss) == pytest.approx(d["regr_loss"] + 2.0 * d["match_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="nothing to train"):
        build_loss(ReconLossConfig(regr_weight=0, match_weight=0))
