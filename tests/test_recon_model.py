"""The pairwise model: shapes, heads, save/load, strict loading, determinism, batch == single."""

from __future__ import annotations

import json

import pytest
import torch
from _common import TINY_MODEL as TINY

from vibe3r.config import ReconModelConfig
from vibe3r.errors import InputError
from vibe3r.recon.model import ReconModel, RoPE2D, build_model


def _imgs(B: int = 2, H: int = 16, W: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, H, W, generator=g), torch.rand(B, 3, H, W, generator=g)


@pytest.mark.parametrize("kw", [
    {},
    {"stem": "patch"},
    {"pts_head": "conv", "share_desc_head": False, "desc_stride": 1},
    {"enc_depth": 0, "pos_emb": "none"},
])
def test_output_shapes_and_head_activations(kw):
    m = build_model(ReconModelConfig(**{**TINY, **kw}))
    x1, x2 = _imgs()
    out = m(x1, x2)
    s = m.config.desc_stride
    assert out["pts11"].shape == out["pts21"].shape == (2, 16, 24, 3)
    assert out["conf1"].shape == (2, 16, 24) and (out["conf1"] > 1).all() and (out["conf2"] > 1).all()
    assert out["desc1"].shape == (2, 16 // s, 24 // s, 8)
    assert torch.allclose(out["desc2"].norm(dim=-1), torch.ones(1), atol=1e-5)


def test_same_seed_same_weights_and_batch_equals_single():
    cfg = ReconModelConfig(**TINY)
    a, b = build_model(cfg, seed=3), build_model(cfg, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(next(build_model(cfg, seed=4).parameters()), next(a.parameters()))
    a.eval()
    x1, x2 = _imgs(3)
    full = a(x1, x2)
    one = a(x1[1:2], x2[1:2])
    for k in full:
        assert torch.allclose(full[k][1:2], one[k], atol=1e-5), k


def test_views_exchange_information_through_cross_attention():
    m = build_model(ReconModelConfig(**TINY)).eval()
    x1, x2 = _imgs(1)
    x2b = torch.rand_like(x2)
    o, ob = m(x1, x2), m(x1, x2b)
    assert not torch.allclose(o["pts11"], ob["pts11"])  # view 1's output depends on view 2


def test_rope_scores_depend_only_on_relative_positions():
    rope = RoPE2D(100.0)
    q = torch.randn(1, 1, 1, 8).expand(1, 1, 2, 8).contiguous()
    k = torch.randn(1, 1, 1, 8).expand(1, 1, 2, 8).contiguous()
    pos_q = torch.tensor([[0, 0], [5, 7]])
    pos_k = torch.tensor([[2, 3], [7, 10]])  # same offset (2, 3) for both
    s = (rope(q, pos_q) * rope(k, pos_k)).sum(-1)
    assert torch.allclose(s[..., 0], s[..., 1], atol=1e-5)


def test_save_load_round_trip(tmp_path):
    m = build_model(ReconModelConfig(**TINY), seed=1).eval()
    m.save_pretrained(tmp_path / "ck")
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["enc_dim"] == 32
    m2 = ReconModel.from_pretrained(tmp_path / "ck").eval()
    x1, x2 = _imgs(1)
    assert torch.equal(m(x1, x2)["pts21"], m2(x1, x2)["pts21"])


def test_loading_another_architecture_is_a_one_line_error(tmp_path):
    build_model(ReconModelConfig(**TINY)).save_pretrained(tmp_path / "a")
    build_model(ReconModelConfig(**{**TINY, "desc_dim": 4})).save_pretrained(tmp_path / "b")
    # weights of b under the config of a: a shape mismatch, named
    (tmp_path / "b" / "config.json").write_text((tmp_path / "a" / "config.json").read_text())
    with pytest.raises(InputError, match="of another shape") as e:
        ReconModel.from_pretrained(tmp_path / "b")
    assert "\n" not in str(e.value)
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    (tmp_path / "a" / "config.json").write_text(json.dumps({**cfg, "arch": "dust3r"}))
    with pytest.raises(InputError, match="architecture 'dust3r'"):
        ReconModel.from_pretrained(tmp_path / "a")
    with pytest.raises(InputError, match="not a vibe3r checkpoint"):
        ReconModel.from_pretrained(tmp_path / "missing")


def test_bad_image_size_is_rejected():
    m = build_model(ReconModelConfig(**TINY))
    with pytest.raises(InputError, match="multiple of the patch size"):
        m(torch.rand(1, 3, 18, 24), torch.rand(1, 3, 18, 24))
