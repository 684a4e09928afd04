"""Typed configuration: one pydantic model per section, YAML loading and ``--set`` overrides.

Every model rejects unknown keys (``extra="forbid"``) so a typo fails loudly with the list of
valid keys. The resolved config is written beside every output (``save_config``).

Sections:

* ``world``    procedural rooms, objects, textures, lighting (video_gen.world)
* ``render``   camera, image size, anti-aliasing and phone-like degradations (video_gen.render)
* ``prompts``  the prompt writer: task description -> motion-language prompts (video_gen.prompts)
* ``dataset``  videos -> training pairs by co-visibility, shards (video_gen.dataset)
* ``recon``    the pairwise reconstruction model and its training (recon)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration problem with a one-line, user-facing message."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------
# video_gen
# --------------------------------------------------------------------------------------------


class WorldConfig(Section):
    """Procedural rooms: sizes in metres, counts per room, texture sources."""

    room_size_min: tuple[float, float] = Field((3.0, 3.0), description="smallest room footprint (x, y) in m")
    room_size_max: tuple[float, float] = Field((7.0, 6.0), description="largest room footprint (x, y) in m")
    room_height: tuple[float, float] = Field((2.4, 3.0), description="ceiling height range in m")
    openings: tuple[int, int] = Field((1, 3), description="doors/windows cut into walls (min, max)")
    objects: tuple[int, int] = Field((4, 10), description="furniture-like objects per room (min, max)")
    clutter: tuple[int, int] = Field((5, 20), description="small clutter items per room (min, max)")
    texture_dirs: list[str] = Field(
        default_factory=list,
        description="folders or files of photos (or real capture frames) to cut image textures from",
    )
    image_texture_prob: float = Field(0.6, ge=0, le=1, description="chance a surface uses an image texture when any are given")
    texture_res: int = Field(256, ge=16, description="texture resolution in texels per side")


class DegradeConfig(Section):
    """Phone-like image degradations; each strength 0 disables it."""

    noise_std: float = Field(0.01, ge=0, description="std of Gaussian+shot noise on [0,1] intensities")
    motion_blur: float = Field(0.5, ge=0, description="blur length as a fraction of the inter-frame pixel motion")
    exposure_drift: float = Field(0.1, ge=0, description="std of the smooth log-exposure random walk")
    vignetting: float = Field(0.3, ge=0, le=1, description="relative brightness loss at the image corners")
    jpeg_quality: int = Field(0, ge=0, le=100, description="JPEG round-trip quality; 0 disables")


class RenderConfig(Section):
    """Camera and image formation."""

    width: int = Field(64, ge=8, description="output width in pixels")
    height: int = Field(48, ge=8, description="output height in pixels")
    fov_deg: tuple[float, float] = Field((55.0, 70.0), description="horizontal field of view range in degrees")
    supersample: int = Field(2, ge=1, le=8, description="rays per pixel side for anti-aliasing (s*s rays per pixel)")
    fps: float = Field(10.0, gt=0, description="frame rate written into video.mp4")
    degrade: DegradeConfig = Field(default_factory=DegradeConfig)


class PromptsConfig(Section):
    """Prompt writer: a one-line task turned into many motion-language prompts."""

    task: str = Field("indoor rooms, slow handheld motion, small rotations", description="one-line description")
    n: int = Field(8, ge=1, description="number of prompts")
    lm_path: str | None = Field(None, description="local transformers causal LM folder; templates when unset")
    seed: int = 0


class DatasetConfig(Section):
    """Videos -> training pairs."""

    n_videos: int = Field(4, ge=1, description="videos rendered (one scene seed each)")
    scene_seed_start: int = Field(1000, description="first scene seed; held-out evaluation uses seeds < 1000")
    pairs_per_video: int = Field(64, ge=1, description="pairs drawn per video")
    covis_min: float = Field(0.3, ge=0, le=1, description="minimum co-visibility of a pair")
    covis_max: float = Field(0.95, ge=0, le=1, description="maximum co-visibility of a pair (skip near-duplicates)")
    covis_tol: float = Field(0.02, gt=0, description="relative depth tolerance deciding co-visibility")
    shard_size: int = Field(256, ge=1, description="pairs per shard file")
    seed: int = 0

    @model_validator(mode="after")
    def _range(self) -> DatasetConfig:
        if self.covis_min > self.covis_max:
            raise ValueError(f"covis_min ({self.covis_min}) > covis_max ({self.covis_max})")
        return self


# --------------------------------------------------------------------------------------------
# recon (owned by the reconstruction stage)
# --------------------------------------------------------------------------------------------


class ReconConfig(Section):
    """Pairwise reconstruction model + training. Filled in by the recon stage."""

    model: dict[str, Any] = Field(default_factory=dict, description="model constructor arguments (config.json)")
    train: dict[str, Any] = Field(default_factory=dict, description="training arguments")


# --------------------------------------------------------------------------------------------
# root
# --------------------------------------------------------------------------------------------


class Config(Section):
    """The whole resolved configuration."""

    seed: int = Field(0, description="global seed; every random thing derives from it")
    world: WorldConfig = Field(default_factory=WorldConfig)
    render: RenderConfig = Field(default_factory=RenderConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    recon: ReconConfig = Field(default_factory=ReconConfig)


def _fmt_error(err: ValidationError, model: type[BaseModel]) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        # find the model that owns the bad key to list its valid keys
        owner: Any = model
        for part in e["loc"][:-1]:
            field = owner.model_fields.get(str(part))
            if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
                break
            owner = field.annotation
        valid = ", ".join(owner.model_fields)
        return f"unknown config key '{loc}' (valid keys here: {valid})"
    return f"bad config value for '{loc}': {e['msg']}"


def _parse_value(raw: str) -> Any:
    """Parse an override value with YAML rules (numbers, bools, lists, null)."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a raw config dict (YAML-parsed values)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{key}': '{p}' is not a section")
        node[parts[-1]] = _parse_value(raw)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML (or the embedded default when ``path`` is None), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must contain a mapping at the top level")
    data = apply_overrides(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_fmt_error(err, Config)) from None


def default_config_path() -> Path:
    """The embedded CPU default shipped in ``configs/default.yaml``."""
    return Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def save_config(cfg: BaseModel, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config beside an output."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    data = json.loads(cfg.model_dump_json())
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


