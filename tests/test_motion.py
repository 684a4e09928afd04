"""The motion language: closed-form checks of every motion, composition, seeding and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import roma
import torch

from vibe3r.errors import InputError
from vibe3r.geometry import intrinsics_from_fov, look_at
from vibe3r.video_gen.motion import (
    Dolly,
    HandheldWalk,
    MotionProgram,
    MotionSyntaxError,
    Orbit,
    Trajectory,
    WalkPath,
    parse_prompt,
    prompt_to_trajectory,
)

W, H = 64, 48
K0 = intrinsics_from_fov(60.0, W, H).numpy()
# a level camera at (1, 2, 1.5) looking along +x, and a pitched/yawed one
LEVEL = look_at(torch.tensor([1.0, 2.0, 1.5]), torch.tensor([2.0, 2.0, 1.5])).numpy()
PITCHED = look_at(torch.tensor([0.5, -1.0, 1.2]), torch.tensor([1.5, 0.0, 0.6])).numpy()


def traj(prompt: str, start: np.ndarray = LEVEL, seed: int = 0) -> Trajectory:
    return prompt_to_trajectory(prompt, start, K0, W, H, seed=seed)


def rotvec(R: np.ndarray) -> np.ndarray:
    return roma.rotmat_to_rotvec(torch.as_tensor(R)).numpy()


def rot(axis, deg: float) -> np.ndarray:
    return roma.rotvec_to_rotmat(torch.as_tensor(np.asarray(axis, float) * math.radians(deg))).numpy()


def project(T: np.ndarray, K: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Pixel of world point X in every frame: (N,2); also asserts it is in front of the camera."""
    Xc = np.einsum("nji,nj->ni", T[:, :3, :3], X[None] - T[:, :3, 3])  # R^T (X - p)
    assert (Xc[:, 2] > 0).all()
    uv = np.einsum("nij,nj->ni", K, Xc / Xc[:, 2:3])
    return uv[:, :2]


def steps(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame translation (m) and rotation (deg) between consecutive frames."""
    dt = np.linalg.norm(np.diff(T[:, :3, 3], axis=0), axis=1)
    rel = np.swapaxes(T[:-1, :3, :3], 1, 2) @ T[1:, :3, :3]
    dr = np.degrees(np.linalg.norm(rotvec(rel), axis=1))
    return dt, dr


# ---------------------------------------------------------------------------------------------


def test_trajectory_has_one_frame_per_step_plus_start_in_float64():
    prog = parse_prompt("Dolly Forward 1 FRAMES 10 then pan left 30 frames 5")
    t = prog.trajectory(LEVEL, K0, W, H)
    assert prog.n_frames == 16 and t.c2w.shape == (16, 4, 4) and t.K.shape == (16, 3, 3)
    assert t.c2w.dtype == np.float64 and t.K.dtype == np.float64
    assert (t.width, t.height) == (W, H) and "dolly" in t.prompt.lower()
    np.testing.assert_array_equal(t.c2w[0], LEVEL)
    assert prog.frame_ranges() == [(0, 10), (10, 15)] == t.segment_frames


@pytest.mark.parametrize("start", [LEVEL, PITCHED], ids=["level", "pitched"])
def test_orbit_keeps_radius_and_looks_at_its_centre(start):
    t = traj("orbit 270 radius 1.2 frames 40", start)
    R0, p0 = start[:3, :3], start[:3, 3]
    f = R0[:, 2] - R0[2, 2] * np.array([0, 0, 1.0])
    f /= np.linalg.norm(f)
    pitch = math.asin(R0[2, 2])
    centre = p0 + 1.2 * f + np.array([0, 0, 1.2 * math.tan(pitch)])  # on the optical axis
    horiz = np.linalg.norm((t.c2w[:, :3, 3] - centre)[:, :2], axis=1)
    np.testing.assert_allclose(horiz, 1.2, atol=1e-9)
    np.testing.assert_allclose(t.c2w[:, 2, 3], p0[2], atol=1e-12)
    np.testing.assert_allclose(project(t.c2w, t.K, centre), np.broadcast_to(K0[:2, 2], (41, 2)), atol=1e-6)
    # 270 degrees counter-clockwise about world up
    a = np.arctan2(*(t.c2w[[0, -1], :3, 3] - centre)[:, [1, 0]].T)
    assert math.isclose((a[1] - a[0]) % (2 * np.pi), math.radians(270), abs_tol=1e-9)


def test_orbit_height_and_direction_words():
    t = traj("orbit left 90 radius 1.0 height 0.5 frames 30")
    centre = LEVEL[:3, 3] + np.array([1.0, 0, 0])
    np.testing.assert_allclose(np.linalg.norm((t.c2w[:, :3, 3] - centre)[:, :2], axis=1), 1.0, atol=1e-9)
    assert math.isclose(t.c2w[-1, 2, 3] - t.c2w[0, 2, 3], 0.5, abs_tol=1e-12)
    np.testing.assert_allclose(project(t.c2w, t.K, centre), np.broadcast_to(K0[:2, 2], (31, 2)), atol=1e-6)
    # 'left' moves the camera to its left (world +y for a camera looking +x), 'right' to its right
    assert t.c2w[-1, 1, 3] > LEVEL[1, 3] + 0.99
    right = traj("orbit right 90 radius 1.0").c2w
    np.testing.assert_allclose(right[-1, :3, 3], LEVEL[:3, 3] + [1.0, -1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(traj("orbit 90 radius 1.0").c2w, right, atol=1e-12)  # + = right = CCW from above


@pytest.mark.parametrize("start", [LEVEL, PITCHED], ids=["level", "pitched"])
def test_pan_rotates_exactly_about_world_up_without_translation(start):
    t = traj("pan left 37 frames 12", start)
    np.testing.assert_allclose(t.c2w[:, :3, 3], np.broadcast_to(start[:3, 3], (13, 3)), atol=0)
    rel = t.c2w[-1, :3, :3] @ start[:3, :3].T  # world-frame rotation applied
    np.testing.assert_allclose(rotvec(rel), [0, 0, math.radians(37)], atol=1e-12)
    right = traj("pan right 20 frames 5", start).c2w[-1, :3, :3] @ start[:3, :3].T
    np.testing.assert_allclose(rotvec(right), [0, 0, -math.radians(20)], atol=1e-12)


@pytest.mark.parametrize(
    ("prompt", "axis", "deg"),
    [("tilt up 25", [1, 0, 0], 25), ("tilt down 10", [1, 0, 0], -10), ("roll right 15", [0, 0, 1], 15), ("roll left 5", [0, 0, 1], -5)],
)
def test_tilt_and_roll_rotate_about_camera_axes(prompt, axis, deg):
    t = traj(prompt, PITCHED)
    local = PITCHED[:3, :3].T @ t.c2w[-1, :3, :3]  # camera-frame rotation applied
    np.testing.assert_allclose(local, rot(axis, deg), atol=1e-12)
    np.testing.assert_allclose(t.c2w[:, :3, 3], np.broadcast_to(PITCHED[:3, 3], t.c2w[:, :3, 3].shape), atol=0)


def test_tilt_up_raises_the_optical_axis():
    z = traj("tilt up 30", LEVEL).c2w[-1, :3, 2]
    assert math.isclose(z[2], math.sin(math.radians(30)), abs_tol=1e-12)


@pytest.mark.parametrize(
    ("prompt", "direction"),
    [
        ("dolly forward 1.3", PITCHED[:3, 2]),
        ("dolly backward 0.4", -PITCHED[:3, 2]),
        ("truck right 0.7", PITCHED[:3, 0]),
        ("truck left 0.2", -PITCHED[:3, 0]),
        ("pedestal up 0.5", np.array([0, 0, 1.0])),
        ("pedestal down 0.25", np.array([0, 0, -1.0])),
    ],
)
def test_translations_move_along_their_axis_by_exactly_d(prompt, direction):
    d = float(prompt.split()[-1])
    t = traj(prompt, PITCHED)
    disp = t.c2w[:, :3, 3] - PITCHED[:3, 3]
    np.testing.assert_allclose(disp[-1], d * direction, atol=1e-12)
    # every frame on the line, monotone progress, orientation constant
    along = disp @ direction
    np.testing.assert_allclose(disp, along[:, None] * direction, atol=1e-12)
    assert (np.diff(along) > 0).all()
    np.testing.assert_allclose(t.c2w[:, :3, :3], np.broadcast_to(PITCHED[:3, :3], (len(t.c2w), 3, 3)), atol=0)


def test_zoom_changes_only_focal_length():
    t = traj("zoom 2.5 frames 10")
    np.testing.assert_array_equal(t.c2w, np.broadcast_to(LEVEL, t.c2w.shape))
    np.testing.assert_allclose(t.K[-1, 0, 0], 2.5 * K0[0, 0], rtol=1e-12)
    np.testing.assert_allclose(t.K[-1, 1, 1], 2.5 * K0[1, 1], rtol=1e-12)
    np.testing.assert_array_equal(t.K[:, :2, 2], np.broadcast_to(K0[:2, 2], (11, 2)))
    assert (np.diff(t.K[:, 0, 0]) > 0).all()
    # later segments keep the zoomed intrinsics
    t2 = traj("zoom 0.5 then dolly forward 1")
    np.testing.assert_allclose(t2.K[-1, 0, 0], 0.5 * K0[0, 0], rtol=1e-12)


def test_segments_continue_without_jumps_and_compose():
    prompt = "orbit 90 then dolly forward 0.8 then pan right 40 then pedestal up 0.3 then tilt down 15 then walk path 1,1 2,0"
    prog = parse_prompt(prompt)
    t = prog.trajectory(LEVEL, K0, W, H)
    # segment k+1 run alone from the last pose of segment k reproduces the same frames
    for (a, b), part in zip(prog.frame_ranges()[1:], prompt.split(" then ")[1:], strict=True):
        if "walk path" in part:  # waypoints live in the prompt's start frame, not the segment's
            continue
        alone = prompt_to_trajectory(part, t.c2w[a], K0, W, H)
        np.testing.assert_allclose(alone.c2w, t.c2w[a : b + 1], atol=1e-9)
    dt, dr = steps(t.c2w)
    # default frame counts keep the mean speed <= 0.05 m, 3 deg per frame; min-jerk peaks at 1.875x
    assert dt.max() <= 1.875 * 0.05 * 1.2 + 1e-9, dt.max()
    assert dr.max() <= 1.875 * 3.0 * 1.2 + 1e-9, dr.max()


def test_segments_ease_in_and_out():
    dt, _ = steps(traj("dolly forward 1 frames 20").c2w)
    assert dt[0] < 0.1 * dt.mean() and dt[-1] < 0.1 * dt.mean()
    assert math.isclose(dt.max(), 1.875 * dt.mean(), rel_tol=0.02)  # minimum-jerk peak speed


def test_handheld_walk_is_seeded_has_length_d_and_small_rotations():
    prompt = "handheld walk 2.0 frames 60"
    a, b, c = traj(prompt, seed=3), traj(prompt, seed=3), traj(prompt, seed=4)
    np.testing.assert_array_equal(a.c2w, b.c2w)
    assert np.abs(a.c2w - c.c2w).max() > 0.05
    dt, dr = steps(a.c2w)
    assert 0.8 * 2.0 <= dt.sum() <= 1.2 * 2.0, dt.sum()
    # the camera stays nearly level (shake of a few tenths of a degree), turns slowly
    y = a.c2w[:, :3, 1]  # camera down axis in the world
    tilt = np.degrees(np.arccos(np.clip(-y[:, 2], -1, 1)))
    assert tilt.max() < 2.0, tilt.max()
    assert dr.max() < 3.0, dr.max()
    # shake is there: the camera wobbles frame to frame about its non-yaw axes
    assert 0.02 < tilt[5:].mean() < 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_handheld_path_length_is_d_for_several_seeds(seed):
    dt, _ = steps(traj("handheld walk 1.0", seed=seed).c2w)
    assert abs(dt.sum() - 1.0) < 0.2


def test_walk_path_passes_through_waypoints_and_heads_along_the_path():
    wps = [(1.0, 0.0), (1.5, 1.0), (0.0, 1.5), (0.0, 0.0)]
    prompt = "walk path " + " ".join(f"{x},{y}" for x, y in wps) + " frames 400"
    t = traj(prompt, LEVEL)
    frame_xy = lambda x, y: LEVEL[:3, 3] + np.array([x, y, 0.0])  # LEVEL looks +x: prompt frame = translated world
    c = t.c2w[:, :3, 3]
    dt, _ = steps(t.c2w)
    for x, y in wps:
        assert np.linalg.norm(c - frame_xy(x, y), axis=1).min() <= dt.max()
    np.testing.assert_allclose(c[-1], frame_xy(*wps[-1]), atol=1e-9)
    np.testing.assert_allclose(c[:, 2], LEVEL[2, 3], atol=1e-12)
    # heading: the optical axis points along the direction of travel (and stays level)
    move = np.diff(c, axis=0)
    fwd = t.c2w[1:, :3, 2]
    ok = np.linalg.norm(move, axis=1) > 1e-3
    cos = (move[ok] * fwd[ok]).sum(1) / np.linalg.norm(move[ok], axis=1)
    assert cos.min() > math.cos(math.radians(5))
    np.testing.assert_allclose(fwd[:, 2], 0.0, atol=1e-12)


def test_walk_path_waypoints_are_in_the_start_cameras_ground_frame():
    # a camera looking along +y: 'forward 1 m' is world +y
    start = look_at(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 0.8])).numpy()
    end = traj("walk path 1,0", start).c2w[-1, :3, 3]
    np.testing.assert_allclose(end, [0.0, 1.0, 1.0], atol=1e-9)
    end = traj("walk path 0,1", start).c2w[-1, :3, 3]  # 1 m to the left = world -x
    np.testing.assert_allclose(end, [-1.0, 0.0, 1.0], atol=1e-9)


def test_look_at_keeps_the_target_at_the_image_centre():
    target = np.array([3.0, 0.5, -0.4])  # prompt frame of LEVEL = world shifted by LEVEL's centre
    tw = LEVEL[:3, 3] + target
    spec = "look_at 3 0.5 -0.4"
    prompt = f"{spec} frames 10 then dolly forward 1 {spec} then truck left 0.5 {spec} then walk path 1,1 0,1 {spec} then zoom 2 {spec}"
    t = traj(prompt)
    uv = project(t.c2w[10:], t.K[10:], tw)
    np.testing.assert_allclose(uv, np.broadcast_to(K0[:2, 2], uv.shape), atol=1e-6)
    # the standalone look_at turns in place
    np.testing.assert_allclose(t.c2w[:11, :3, 3], np.broadcast_to(LEVEL[:3, 3], (11, 3)), atol=0)
    # image stays level under look_at (camera x horizontal)
    np.testing.assert_allclose(t.c2w[10:, 2, 0], 0.0, atol=1e-12)


def test_look_at_modifier_blends_in_without_a_jump():
    target = np.array([2.0, -2.0, 0.5])
    t = traj("dolly forward 1 frames 30 look_at 2 -2 0.5")
    uv = project(t.c2w[16:], t.K[16:], LEVEL[:3, 3] + target)  # exact from the second half on
    np.testing.assert_allclose(uv, np.broadcast_to(K0[:2, 2], uv.shape), atol=1e-6)
    _, dr = steps(t.c2w)
    assert dr.max() < 10.0
    np.testing.assert_allclose(t.c2w[-1, :3, 3] - LEVEL[:3, 3], [1.0, 0, 0], atol=1e-12)  # positions unchanged


def test_every_rotation_is_orthonormal_with_det_plus_one():
    prompt = (
        "orbit -200 radius 0.9 height -0.3 then handheld walk 1.5 look_at 1 1 0 then tilt up 80 then roll left 30 "
        "then look_at 0 0 -1 then walk path 2,2 -1,1 then pan left 400 then zoom 0.7 then hold frames 3"
    )
    for seed in (0, 1):
        R = traj(prompt, PITCHED, seed=seed).c2w[:, :3, :3]
        np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
        np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)


def test_paths_move_rigidly_with_a_yawed_and_shifted_start():
    prompt = "orbit 120 radius 1 then handheld walk 1 look_at 2 0 0 then walk path 1,-1 2,0 then dolly backward 0.5"
    yaw = np.eye(4)
    yaw[:3, :3] = rot([0, 0, 1], 63.0)
    yaw[:3, 3] = [2.0, -3.0, 0.4]
    a = traj(prompt, PITCHED, seed=5).c2w
    b = traj(prompt, yaw @ PITCHED, seed=5).c2w
    np.testing.assert_allclose(b, yaw @ a, atol=1e-9)


def test_extent_is_centres_from_the_canonical_start():
    prog = parse_prompt("dolly forward 2 then truck left 1 then pedestal up 0.5")
    e = prog.extent()
    assert e.shape == (prog.n_frames, 3)
    np.testing.assert_allclose(e[0], 0.0, atol=0)
    np.testing.assert_allclose(e[-1], [2.0, 1.0, 0.5], atol=1e-12)  # x forward, y left, z up
    walk = parse_prompt("walk path 1,0.5 -1,2").extent()
    np.testing.assert_allclose(walk[-1], [-1.0, 2.0, 0.0], atol=1e-9)


def test_parse_gives_typed_segments_with_defaults():
    prog = parse_prompt("orbit 360 radius 1.5 height 0.2 frames 48 then dolly backward 2 then handheld walk 1 then walk path 1,0 1,1")
    assert isinstance(prog, MotionProgram)
    o, d, h, w = prog.segments
    assert isinstance(o, Orbit) and (o.angle, o.radius, o.height, o.frames) == (360, 1.5, 0.2, 48)
    assert isinstance(d, Dolly) and d.distance == -2.0 and d.frames == 40  # 2 m at <= 0.05 m/frame
    assert isinstance(h, HandheldWalk) and h.frames == 24
    assert isinstance(w, WalkPath) and w.waypoints == ((1.0, 0.0), (1.0, 1.0))


@pytest.mark.parametrize(
    ("prompt", "needles"),
    [
        ("spin 90", ["unknown motion word 'spin'", "position 1", "valid words: orbit"]),
        ("orbit 90 then spinn 3", ["'spinn'", "position 4"]),
        ("dolly forwards 1.0", ["'forwards' is not a direction for dolly", "forward|backward", "position 2"]),
        ("pan upward 10", ["'upward' is not a direction for pan", "left|right"]),
        ("truck", ["'truck' needs a direction"]),
        ("orbit 90 radius big", ["expected a number after 'radius', got 'big'", "position 4"]),
        ("tilt up", ["expected a number after 'up', got end of prompt"]),
        ("orbit around", ["expected a number or left|right after 'orbit', got 'around'"]),
        ("zoom 0", ["zoom factor must be > 0"]),
        ("dolly forward 1 frames 2.5", ["frames", "'2.5'"]),
        ("walk path 1;2", ["expected a waypoint x,y after 'path', got '1;2'"]),
        ("walk path 1,2,3", ["bad waypoint '1,2,3'"]),
        ("handheld 2", ["expected 'walk' after 'handheld'"]),
        ("pan left 10 then", ["nothing after 'then'"]),
        ("pan left 10 then then pan right 3", ["empty segment"]),
        ("pan left 10 tilt up 3", ["'tilt' starts a new motion", "then"]),
        ("orbit 90 look_at 0 0 0", ["look_at cannot modify 'orbit'"]),
        ("dolly forward 1 look_at 1 2", ["expected a number after '2', got end of prompt"]),
        ("dolly forward 1 frames 10 frames 12", ["'frames' given twice"]),
        ("", ["empty motion prompt"]),
        ("   ", ["empty motion prompt"]),
    ],
)
def test_bad_prompts_raise_one_line_errors_naming_the_token(prompt, needles):
    with pytest.raises(MotionSyntaxError) as exc:
        parse_prompt(prompt)
    msg = str(exc.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg
    assert isinstance(exc.value, InputError)


def test_look_at_through_the_camera_is_an_input_error():
    with pytest.raises(InputError, match="coincides"):
        traj("dolly forward 1 frames 4 look_at 0.5 0 0")  # the camera passes through the target


def test_bad_start_pose_is_an_input_error():
    with pytest.raises(InputError, match="orthonormal"):
        traj("still", start=np.diag([1.0, 2.0, 1.0, 1.0]))
