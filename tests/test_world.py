"""Procedural world: determinism, non-intersecting furniture, free-space path placement, textures."""

from __future__ import annotations

import numpy as np
import pytest

from vibe3r.config import WorldConfig
from vibe3r.errors import InputError
from vibe3r.video_gen import textures as tx
from vibe3r.video_gen.world import R_START, _overlap, build_scene

SMALL = WorldConfig(texture_res=64, objects=(3, 6), clutter=(2, 6), decor=(1, 3))


@pytest.fixture(scope="module")
def scene():
    return build_scene(3, SMALL)


def _fingerprint(sc) -> tuple:
    return (sc.size, len(sc.parts), tuple(float(np.asarray(p.mesh.vertices).sum()) for p in sc.parts))


def test_same_seed_same_scene_and_different_seeds_differ(scene):
    again = build_scene(3, SMALL)
    assert _fingerprint(again) == _fingerprint(scene)
    np.testing.assert_array_equal(again.textures.levels[0], scene.textures.levels[0])
    other = build_scene(4, SMALL)
    assert _fingerprint(other) != _fingerprint(scene)


def test_room_within_config_ranges(scene):
    Lx, Ly, H = scene.size
    assert SMALL.room_size_min[0] <= Lx <= SMALL.room_size_max[0]
    assert SMALL.room_size_min[1] <= Ly <= SMALL.room_size_max[1]
    assert SMALL.room_height[0] <= H <= SMALL.room_height[1]
    assert 1 <= len(scene.lights) <= 3


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_furniture_on_floor_inside_room_and_not_intersecting(seed):
    sc = build_scene(seed, SMALL)
    Lx, Ly, H = sc.size
    furniture = [o for o in sc.obstacles if o.name in ("table", "desk", "bookcase", "cabinet", "sofa", "chair", "crate", "plant")]
    assert len(furniture) >= 1
    for i, a in enumerate(furniture):
        fp = a.footprint()
        assert fp[:, 0].min() >= -1e-6 and fp[:, 0].max() <= Lx + 1e-6
        assert fp[:, 1].min() >= -1e-6 and fp[:, 1].max() <= Ly + 1e-6
        assert abs(a.centre[2] - a.half[2]) < 1e-9  # stands on the floor
        for b in furniture[i + 1:]:
            assert not _overlap(fp, b.footprint()), f"{a.name} intersects {b.name}"


def test_every_ray_from_inside_hits_something(scene):
    """The room is closed: doors lead to corridors, windows to an outdoor enclosure."""
    rng = np.random.default_rng(0)
    Lx, Ly, H = scene.size
    o = np.tile([[Lx / 2, Ly / 2, 1.5]], (2000, 1))
    d = rng.standard_normal((2000, 3))
    t = scene.cast(o, d)["t_hit"]
    assert np.isfinite(t).all()


def test_place_trajectory_keeps_every_camera_centre_free(scene):
    ext = np.stack([np.linspace(0, 1.0, 20), np.zeros(20), np.zeros(20)], -1)  # 1 m forward
    rng = np.random.default_rng(0)
    start = scene.place_trajectory(ext, rng)
    assert 1.2 <= start[2, 3] <= 1.7
    np.testing.assert_allclose(start[:3, :3].T @ start[:3, :3], np.eye(3), atol=1e-12)
    assert abs(start[2, 2]) < 1e-12  # level: the optical axis is horizontal
    Rz = start[:3, :3] @ R_START.T  # the yaw that was applied to the canonical start
    np.testing.assert_allclose(Rz[2], [0, 0, 1], atol=1e-12)
    centres = ext @ Rz.T + start[:3, 3]
    assert scene.free_mask(centres, 0.3).all()


def test_too_large_path_is_shrunk_or_rejected(scene):
    big = np.stack([np.linspace(0, 30.0, 30), np.zeros(30), np.zeros(30)], -1)
    with pytest.raises(InputError, match="does not fit"):
        scene.place_trajectory(big, np.random.default_rng(0))
    Lx, Ly, _ = scene.size
    long = np.stack([np.linspace(0, 1.6 * max(Lx, Ly), 30), np.zeros(30), np.zeros(30)], -1)
    start, scale = scene.fit_trajectory(long, np.random.default_rng(0), min_scale=0.1)
    assert scale < 1.0


def test_fit_trajectory_accepts_motion_program(scene):
    from vibe3r.video_gen.motion import parse_prompt

    prog = parse_prompt("orbit left 60 radius 1.0 frames 12")
    start, scale = scene.fit_trajectory(prog, np.random.default_rng(1))
    traj = prog.trajectory(start, np.eye(3), 1, 1)
    c = start[:3, 3] + scale * (traj.c2w[:, :3, 3] - start[:3, 3])
    assert scene.free_mask(c, 0.3).all()


def test_view_content_tells_bare_ceiling_from_an_object(scene):
    """Looking straight up away from the lamps sees only shell; looking at a piece of furniture does not."""
    from vibe3r import geometry

    Lx, Ly, H = scene.size
    xy = np.stack(np.meshgrid(np.linspace(0.5, Lx - 0.5, 15), np.linspace(0.5, Ly - 0.5, 15)), -1).reshape(-1, 2)
    lamps = np.array([lt.pos[:2] for lt in scene.lights])
    far = xy[np.argmax(np.linalg.norm(xy[:, None] - lamps[None], axis=-1).min(1))]  # farthest from every lamp
    up = geometry.look_at(np.array([*far, 1.5]), np.array([far[0] + 1e-3, far[1], H])).numpy()
    ob = next(o for o in scene.obstacles if o.name in ("table", "desk", "bookcase", "cabinet", "sofa", "chair", "crate", "plant"))
    eyes = [ob.centre + np.array([np.cos(a), np.sin(a), 0.0]) * 1.2 for a in np.linspace(0, 2 * np.pi, 16, endpoint=False)]
    eye = next(e for e in eyes if scene.free_mask(np.array([e[0], e[1], 1.4])[None], 0.1)[0])
    at = geometry.look_at(np.array([eye[0], eye[1], 1.4]), ob.centre).numpy()
    c2w = np.stack([up, at])
    vc = scene.view_content(c2w[:, :3, 3], c2w[:, :3, :3])
    assert vc["thing"].shape == (2,) and vc["depth"].shape == (2, 20)
    assert vc["thing"][0] == 0.0 and vc["out"][0] == 0.0
    np.testing.assert_allclose(vc["depth"][0].max(), H - 1.5, rtol=1e-3)  # z-depth of the ceiling (rays near a wall stop earlier)
    assert vc["thing"][1] >= 0.25
    np.testing.assert_array_equal(vc["thing"], vc["thing_rays"].mean(-1))


# --------------------------------------------------------------------------------------------
# textures
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(tx.GENERATORS))
def test_texture_generators_are_seeded_and_in_range(kind):
    a = tx.GENERATORS[kind](64, np.random.default_rng(1))
    b = tx.GENERATORS[kind](64, np.random.default_rng(1))
    assert a.shape == (64, 64, 3)
    assert 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["dead_leaves", "wood", "tiles", "fabric", "carpet", "marble"])
def test_tileable_textures_have_no_seam(kind):
    """Across the wrap-around seam the texture changes no more than between neighbouring columns."""
    img = tx.GENERATORS[kind](128, np.random.default_rng(2)).mean(-1)
    inner = np.abs(np.diff(img, axis=1)).mean()
    seam = np.abs(img[:, 0] - img[:, -1]).mean()
    assert seam < 3 * inner + 1e-3


def test_dead_leaves_has_natural_power_spectrum():
    """Natural images have power ∝ 1/f^2; dead leaves reproduce it (checkers and smooth noise do not)."""
    img = tx.GENERATORS["dead_leaves"](256, np.random.default_rng(0)).mean(-1)
    P = np.abs(np.fft.fft2(img - img.mean())) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(256), np.fft.fftfreq(256)))
    bands = np.geomspace(4 / 256, 64 / 256, 8)
    power = [P[(f >= lo) & (f < hi)].mean() for lo, hi in zip(bands[:-1], bands[1:], strict=True)]
    centres = np.sqrt(bands[:-1] * bands[1:])
    slope = np.polyfit(np.log(centres), np.log(power), 1)[0]
    assert -2.8 < slope < -1.5


def test_texture_bank_mipmaps_average_and_sample_exactly():
    rng = np.random.default_rng(0)
    img = rng.random((16, 16, 3)).astype(np.float32)
    bank = tx.TextureBank.build([img], [False], ["t"])
    lin = bank.levels[0][0]
    # at level 0, texel centres sample exactly
    u = np.array([0.5, 3.5, 15.5])
    v = np.array([0.5, 7.5, 2.5])
    out = bank.sample(np.zeros(3, np.int64), u, v, np.zeros(3))
    np.testing.assert_allclose(out, lin[v.astype(int), u.astype(int)], atol=1e-6)
    # the coarsest level is the texture's mean (no aliasing far away)
    far = bank.sample(np.zeros(1, np.int64), np.array([3.3]), np.array([9.1]), np.array([10.0]))
    np.testing.assert_allclose(far[0], lin.reshape(-1, 3).mean(0), atol=1e-5)
    # wrap addressing: one period away is the same sample
    a = bank.sample(np.zeros(1, np.int64), np.array([2.2]), np.array([5.7]), np.array([0.4]))
    b = bank.sample(np.zeros(1, np.int64), np.array([2.2 + 16]), np.array([5.7 - 32]), np.array([0.4]))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_image_textures_from_folder(tmp_path):
    import cv2

    img = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    files = tx.find_images([str(tmp_path)])
    crop = tx.image_crop(32, np.random.default_rng(0), files)
    assert crop.shape == (32, 32, 3) and 0 <= crop.min() and crop.max() <= 1
    with pytest.raises(InputError, match="not found"):
        tx.find_images([str(tmp_path / "missing")])
    sc = build_scene(1, SMALL.model_copy(update={"texture_dirs": [str(tmp_path)], "image_texture_prob": 1.0}))
    assert "image" in sc.textures.names


def test_texture_bank_mirror_addressing_reflects_at_the_borders():
    img = np.random.default_rng(1).random((16, 16, 3)).astype(np.float32)
    bank = tx.TextureBank.build([img, img], [False, True], ["wrap", "mirror"])
    one = np.ones(1, np.int64)
    at = lambda t, u, v, lod=0.0: bank.sample(t * one, np.array([u]), np.array([v]), np.array([lod]))  # noqa: E731
    np.testing.assert_allclose(at(0, 5.3, 7.9), at(1, 5.3, 7.9), atol=1e-6)  # inside: the same texture
    np.testing.assert_allclose(at(1, -2.3, 4.4), at(1, 2.3, 4.4), atol=1e-6)  # reflected about 0
    np.testing.assert_allclose(at(1, 16 + 1.7, 4.4), at(1, 16 - 1.7, 4.4), atol=1e-6)  # and about S
    np.testing.assert_allclose(at(1, 3.1, 32 + 5.5, 1.6), at(1, 3.1, 5.5, 1.6), atol=1e-6)  # period 2S, any level
