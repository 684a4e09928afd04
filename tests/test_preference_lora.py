"""LoRA adapters on the reconstruction model: the reference is the exact base model, adapters round-trip,
merging gives a plain checkpoint."""

from __future__ import annotations

import copy

import pytest
import torch
from _common import TINY_MODEL

from vibe3r.config import ReconModelConfig
from vibe3r.errors import InputError
from vibe3r.preference.lora import LoRAConfig, LoraReconModel
from vibe3r.recon.model import ReconModel, build_model


def _imgs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)


def _perturb(model: LoraReconModel, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.lora_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def test_adapters_start_as_identity_and_only_they_are_trainable():
    base = build_model(ReconModelConfig(**TINY_MODEL), seed=0)
    frozen = copy.deepcopy(base)
    model = LoraReconModel(base, LoRAConfig(r=4))
    x1, x2 = _imgs()
    out, ref = model(x1, x2), frozen(x1, x2)
    assert all(torch.equal(out[k], ref[k]) for k in ref)  # B = 0 at the start
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # every target group got adapters: attention, MLPs, descriptor trunk and head convs
    names = " ".join(trainable)
    for part in ("enc_blocks.0.attn.q", "enc_blocks.0.mlp.0", "dec_blocks1.0.cross.kv", "dec_blocks2.0.attn.proj",
                 "trunks.0.blocks.0.0", "trunks.0.inp.0", "desc_heads.0.proj"):
        assert part + ".lora_A" in names, part
    assert "pts_heads" not in names and "stem" not in names


def test_reference_is_the_base_model_and_merge_gives_a_plain_checkpoint(tmp_path):
    base = build_model(ReconModelConfig(**TINY_MODEL), seed=0)
    frozen = copy.deepcopy(base)
    model = LoraReconModel(base, LoRAConfig(r=4, targets=["enc_attn", "dec_mlp", "desc_trunk", "desc_head", "pts_head"]))
    _perturb(model)
    x1, x2 = _imgs()
    out = model(x1, x2)
    with model.reference():
        ref = model(x1, x2)
    want = frozen(x1, x2)
    assert all(torch.equal(ref[k], want[k]) for k in want)
    assert not torch.allclose(out["desc1"], want["desc1"]) and not torch.allclose(out["pts11"], want["pts11"])
    # merged: a plain ReconModel giving the adapted outputs
    model.merge_and_save(tmp_path / "merged")
    merged = ReconModel.from_pretrained(tmp_path / "merged")
    got = merged(x1, x2)
    for k in out:
        torch.testing.assert_close(got[k], out[k], atol=1e-5, rtol=1e-4)
    # merging did not touch the adapted model
    assert torch.equal(model(x1, x2)["desc1"], out["desc1"])


def test_adapter_save_load_round_trip(tmp_path):
    cfg = LoRAConfig(r=2, alpha=4, targets=["dec_attn", "desc_head"])
    model = LoraReconModel(build_model(ReconModelConfig(**TINY_MODEL), seed=0), cfg)
    _perturb(model)
    model.save_adapter(tmp_path / "a")
    again = LoraReconModel.from_adapter(build_model(ReconModelConfig(**TINY_MODEL), seed=0), tmp_path / "a")
    assert again.lora_config == cfg
    x1, x2 = _imgs()
    assert torch.equal(again(x1, x2)["desc2"], model(x1, x2)["desc2"])
    other = build_model(ReconModelConfig(**{**TINY_MODEL, "desc_dim": 16}), seed=0)
    with pytest.raises(InputError, match="another base model"):
        LoraReconModel.from_adapter(other, tmp_path / "a")
    with pytest.raises(InputError, match="not a LoRA adapter"):
        LoraReconModel.from_adapter(other, tmp_path)


def test_seeded_adapter_init_and_unknown_targets():
    a = LoraReconModel(build_model(ReconModelConfig(**TINY_MODEL), seed=0), LoRAConfig(r=4, seed=3))
    b = LoraReconModel(build_model(ReconModelConfig(**TINY_MODEL), seed=0), LoRAConfig(r=4, seed=3))
    assert all(torch.equal(p, q) for p, q in zip(a.lora_parameters(), b.lora_parameters()))
    with pytest.raises(ValueError):
        LoRAConfig(targets=["attention"])
    with pytest.raises(InputError, match="match no layer"):
        LoraReconModel(build_model(ReconModelConfig(**{**TINY_MODEL, "enc_depth": 0}), seed=0), LoRAConfig(targets=["enc_mlp"]))
