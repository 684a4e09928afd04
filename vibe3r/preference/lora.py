"""LoRA adapters (🤗 peft) on the reconstruction model: the trainable policy of DPO and GRPO, whose
frozen base (adapters disabled) is the reference.

LoRA (Hu et al. 2021, eq. 3) replaces a frozen layer ``W x`` by ``W x + (α/r) B A x`` with
``A`` (r × in) random and ``B`` (out × r) zero at the start, so the adapted model *is* the base model
until the first step. peft supports ``nn.Linear`` and ``nn.Conv2d`` (for a k×k conv, ``A`` is a k×k
conv to r channels and ``B`` a 1×1 conv), which covers every layer we adapt:

==============  ================================================================================
target group    modules of ``ReconModel``
==============  ================================================================================
``enc_attn``    encoder self-attention ``q``, ``kv``, ``proj`` (Linear)
``enc_mlp``     encoder MLPs (Linear)
``dec_embed``   the encoder → decoder projection (Linear)
``dec_attn``    decoder self-attention (both views' stacks)
``dec_cross``   decoder cross-attention to the other view
``dec_mlp``     decoder MLPs
``desc_trunk``  the upsampling trunk's convs (1×1 input conv, 3×3 block convs) feeding the descriptors
``desc_head``   the descriptor projection (1×1 conv)
``pts_head``    the pointmap heads (off by default: the match policy does not read them)
``stem``        the CNN / patch stem convs (off by default)
==============  ================================================================================

A tiny CPU use::

    base = ReconModel.from_pretrained("weights/recon-base")
    model = LoraReconModel(base, LoRAConfig(r=8))        # wraps ``base`` in place
    out = model(img1, img2)                               # adapted
    with model.reference():                               # frozen base, bit-identical to ``base`` before wrapping
        ref = model(img1, img2)
    model.save_adapter("runs/dpo/adapter")               # lora_config.json + adapter_model.safetensors
    model.merge_and_save("runs/dpo/merged")              # a plain ReconModel checkpoint
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
from pydantic import Field
from safetensors.torch import load_file, save_file

from vibe3r.config import ReconModelConfig, Section
from vibe3r.errors import InputError
from vibe3r.recon.model import ReconModel

ADAPTER_CONFIG_NAME = "lora_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"

TargetGroup = Literal["enc_attn", "enc_mlp", "dec_embed", "dec_attn", "dec_cross", "dec_mlp", "desc_trunk", "desc_head",
                      "pts_head", "stem"]

# module-name patterns (full match against ``ReconModel.named_modules()``) of every target group
TARGET_PATTERNS: dict[str, str] = {
    "enc_attn": r"enc_blocks\.\d+\.attn\.(q|kv|proj)",
    "enc_mlp": r"enc_blocks\.\d+\.mlp\.(0|2)",
    "dec_embed": r"dec_embed",
    "dec_attn": r"dec_blocks[12]\.\d+\.attn\.(q|kv|proj)",
    "dec_cross": r"dec_blocks[12]\.\d+\.cross\.(q|kv|proj)",
    "dec_mlp": r"dec_blocks[12]\.\d+\.mlp\.(0|2)",
    "desc_trunk": r"trunks\.\d+\.(inp\.0|blocks\.\d+\.(0|3))",
    "desc_head": r"desc_heads\.\d+\.proj",
    "pts_head": r"pts_heads\.\d+\.proj",
    "stem": r"stem\.(stages\.\d+\.(0|3)|out|proj)",
}


class LoRAConfig(Section):
    """LoRA adapters on the reconstruction model (``preference.lora``)."""

    r: int = Field(8, ge=1, description="adapter rank")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator: the update is (alpha / r) B A x")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input (0 keeps train-mode log-likelihoods exact)")
    targets: list[TargetGroup] = Field(
        ["enc_attn", "enc_mlp", "dec_attn", "dec_cross", "dec_mlp", "desc_trunk", "desc_head"], min_length=1,
        description="layer groups that get adapters: " + ", ".join(TARGET_PATTERNS))
    seed: int = Field(0, description="seed of the random A matrices (B starts at zero)")

    def target_regex(self) -> str:
        return "(" + "|".join(TARGET_PATTERNS[t] for t in self.targets) + ")"


class LoraReconModel(nn.Module):
    """A ``ReconModel`` with LoRA adapters; only the adapter weights are trainable.

    The wrapped base model is modified in place (peft swaps its target layers for LoRA layers that
    hold the original layer); with ``reference()`` active those layers compute exactly the original
    layer, so the outputs are bit-identical to the base model's.
    """

    def __init__(self, base: ReconModel, cfg: LoRAConfig | None = None) -> None:
        from peft import LoraConfig, get_peft_model

        super().__init__()
        cfg = cfg or LoRAConfig()
        names = [n for n, m in base.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
        missing = [t for t in cfg.targets if not any(_fullmatch(TARGET_PATTERNS[t], n) for n in names)]
        if missing:
            raise InputError(f"LoRA target groups {missing} match no layer of this model (its depth or heads lack them)")
        peft_cfg = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_regex(),
                              bias="none")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.peft = get_peft_model(base, peft_cfg)
        self.lora_config = cfg

    # ---- the model -----------------------------------------------------------------------------

    @property
    def config(self) -> ReconModelConfig:
        """The base model's config (so ``MatchPolicy`` and friends see a ReconModel-like object)."""
        return self.base_model.config

    @property
    def base_model(self) -> ReconModel:
        """The underlying ReconModel (with LoRA layers injected)."""
        return self.peft.get_base_model()

    def forward(self, img1: torch.Tensor, img2: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.peft(img1, img2)

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """Run the frozen base model: adapters disabled (peft's ``disable_adapter``)."""
        with self.peft.disable_adapter():
            yield

    def lora_parameters(self) -> list[nn.Parameter]:
        """The trainable adapter weights, in a fixed order."""
        return [p for _, p in self.named_lora_parameters()]

    def named_lora_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.peft.named_parameters() if "lora_" in n]

    @property
    def num_lora_parameters(self) -> int:
        return sum(p.numel() for p in self.lora_parameters())

    # ---- checkpoints ---------------------------------------------------------------------------

    def save_adapter(self, out_dir: str | Path) -> Path:
        """Write ``lora_config.json`` (the LoRA config and the base model's config) and
        ``adapter_model.safetensors`` (the adapter weights only)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {n: p.detach().contiguous().clone() for n, p in self.named_lora_parameters()}
        save_file(state, str(out / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt", "arch": self.config.arch})
        meta = {"lora": self.lora_config.model_dump(), "base_model": self.config.model_dump()}
        (out / ADAPTER_CONFIG_NAME).write_text(json.dumps(meta, indent=1))
        return out

    def load_adapter_weights(self, path: str | Path) -> None:
        """Load adapter weights strictly (every adapter key, every shape, nothing else)."""
        state = load_file(str(path))
        own = dict(self.named_lora_parameters())
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or extra or bad:
            raise InputError(f"adapter weights {path} do not fit this model: {len(missing)} missing, {len(extra)} unexpected, "
                             f"{len(bad)} of another shape" + (f" (e.g. {(missing or extra or bad)[0]})"))
        with torch.no_grad():
            for k, p in own.items():
                p.copy_(state[k])

    @classmethod
    def from_adapter(cls, base: ReconModel, adapter_dir: str | Path) -> LoraReconModel:
        """Wrap ``base`` with the adapters saved in ``adapter_dir`` (its base config must match)."""
        d = Path(adapter_dir)
        if not (d / ADAPTER_CONFIG_NAME).is_file() or not (d / ADAPTER_WEIGHTS_NAME).is_file():
            raise InputError(f"not a LoRA adapter (needs {ADAPTER_CONFIG_NAME} and {ADAPTER_WEIGHTS_NAME}): {d}")
        meta = json.loads((d / ADAPTER_CONFIG_NAME).read_text())
        if ReconModelConfig.model_validate(meta["base_model"]) != base.config:
            raise InputError(f"adapter {d} was trained on another base model architecture")
        model = cls(base, LoRAConfig.model_validate(meta["lora"]))
        model.load_adapter_weights(d / ADAPTER_WEIGHTS_NAME)
        return model

    def merged(self) -> ReconModel:
        """A plain ``ReconModel`` with the adapters folded into its weights (this model is unchanged)."""
        from peft.tuners.lora import LoraLayer

        peft = copy.deepcopy(self.peft)
        for m in peft.modules():
            if isinstance(m, LoraLayer):
                m.merge()  # base_layer.weight += (alpha / r) B A
        # (peft's merge_and_unload expects a dict-like transformers config; the state dict is all we need)
        state = {k.replace(".base_layer.", "."): v for k, v in peft.get_base_model().state_dict().items() if "lora_" not in k}
        with torch.random.fork_rng(devices=[]):
            plain = ReconModel(self.config)
        plain.load_state_dict(state, strict=True)
        return plain.eval()

    def merge_and_save(self, out_dir: str | Path) -> Path:
        """Write the merged model as a checkpoint ``ReconModel.from_pretrained`` loads."""
        return self.merged().save_pretrained(out_dir)


def _fullmatch(pattern: str, name: str) -> bool:
    import re

    return re.fullmatch(pattern, name) is not None
