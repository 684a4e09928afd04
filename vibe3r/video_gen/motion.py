"""The motion language: text prompts -> camera trajectories with exact poses and intrinsics.

A prompt is a sequence of *segments* joined by ``then``. Words are case-insensitive, units are
metres and degrees, and every segment may end with ``frames N`` (how many frame steps it lasts).
Segments continue from where the previous one ended; frame 0 of the trajectory is the start pose,
and segment k adds ``N_k`` frames, so a program has ``1 + sum(N_k)`` frames and the first frame of
segment k+1 *is* the last frame of segment k.

Grammar (``|`` alternatives, ``[...]`` optional)::

    prompt   := segment ("then" segment)*
    segment  := motion ["frames" N] ["look_at" X Y Z]      (options in any order)
    motion   := "orbit" [left|right] ANGLE ["radius" R] ["height" H]
              | "dolly" forward|backward D     | "truck" left|right D  | "pedestal" up|down D
              | "pan" left|right DEG           | "tilt" up|down DEG    | "roll" left|right DEG
              | "zoom" F                       | "handheld" "walk" D
              | "walk" "path" x,y [x,y ...]    | "look_at" X Y Z       | "still" | "hold"

Numbers may carry a sign: a negative magnitude after a direction word reverses it
(``dolly forward -1`` == ``dolly backward 1``). ``hold`` is ``still``; ``lookat``/``look-at`` are
``look_at``. Errors (``MotionSyntaxError``, an ``InputError``) are one line naming the bad token,
its 1-based word position, and what was expected.

Semantics (``c2w = [R | p]``, OpenCV camera axes, world z-up; R0, p0 = pose at the segment start):

* ``orbit ANGLE`` — rotate the camera about a vertical axis through a centre ``c`` that lies on
  the optical axis at horizontal distance R (default 1.5 m) in front of the camera (for a level
  camera: straight ahead at eye height; the pitch used to place it is clamped to ±60°). The eye
  follows ``c + Rz(a·s) (p0 - c) + H·s·e_z`` and the orientation is ``L(t) L(0)^T R0`` with
  ``L = look_at(eye, c)``: a level camera looks exactly at the centre on every frame, a rolled or
  pitched one keeps its offset. ANGLE follows the right-hand rule about world up (+ =
  counter-clockwise seen from above, which moves the camera to its *right*); ``orbit left A`` moves
  the camera to its left (clockwise from above), ``orbit right A`` to its right.
* ``dolly`` / ``truck`` translate along the start camera's z / x axis by exactly D; ``pedestal``
  along world +z. ``pan`` rotates about world up through the camera centre (``R = Rz(a) R0``,
  left = +), ``tilt`` about the camera x axis (``R = R0 Rx(a)``, up = +), ``roll`` about the
  optical axis (``R = R0 Rz(a)``, right = + = image top moves right).
* ``zoom F`` — camera still, focal lengths scaled geometrically ``f(t) = f0 · F^s(t)``; the
  principal point does not move, later segments keep the new K.
* ``walk path x1,y1 ...`` — waypoints in the *prompt frame* (below); the camera keeps its height
  and follows a C1 cubic Hermite curve from its current position through every waypoint, leaving
  along its current horizontal heading and turning (yaw about world up, pitch and roll kept) to
  face along the curve. Progress is eased over the walking effort ``length + k·|turn|``
  (``k = TRANS_SPEED / ROT_SPEED``), so the walker slows down in sharp turns. Default frames
  assume the walk starts at the prompt-frame origin heading +x (likewise for ``look_at``).
* ``handheld walk D`` — a seeded smooth random walk of horizontal path length exactly D with a
  slowly varying heading (sum of three low-frequency sinusoids, ~±30°), the camera facing along it,
  a ~1 cm vertical bob, plus handheld shake: Gaussian-filtered noise of ~0.3° per axis rotation and
  ~1 mm translation in the camera frame, ramped in over the first frames.
* ``look_at X Y Z`` as a segment: the camera stays put and turns (slerp) until it aims at the
  point. As a modifier (``dolly forward 1.0 look_at 2 0 0``) of dolly, truck, pedestal, walk path,
  handheld walk, zoom, still: the segment's positions are unchanged and the camera is aimed at the
  point on every frame, image kept level (``geometry.look_at`` with world up). If the camera does
  not already aim there at the segment start, the aim is blended in over the first half of the
  segment (slerp with the same easing), so there is never a jump. The modifier lasts for its
  segment only; orbit, pan, tilt and roll set the orientation themselves and refuse it.
* ``still`` / ``hold`` — no motion for N frames.

**Prompt frame.** All coordinates written in a prompt (waypoints, look_at points) are in the
start camera's ground frame: origin at the *start* camera centre, x = its horizontal forward
direction, y = left, z = world up (so ``look_at 2 0 -0.5`` is 2 m ahead, 0.5 m below eye level).
This makes every prompt independent of where the camera starts: for any start pose differing by a
yaw about world up and a translation ``T``, ``trajectory(T @ start) == T @ trajectory(start)``,
which is what lets a renderer plan with ``extent()`` and then place the path in a room.

**Timing.** Every segment follows the minimum-jerk profile ``s(t) = 10t^3 - 15t^4 + 6t^5``
(t = i/N): zero velocity and acceleration at both ends, peak speed 1.875x the mean — the profile of
human reaching and camera-operator moves. Default frame counts give a mean speed of at most
``TRANS_SPEED`` m/frame and ``ROT_SPEED`` °/frame, and never fewer than ``DEFAULT_FRAMES``.

Rotations use roma (rotation vectors, geodesic slerp); nothing here composes Euler angles.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field

import numpy as np
import roma
import torch

from vibe3r.errors import InputError
from vibe3r.geometry import look_at as _look_at_pose

DEFAULT_FRAMES = 24  # frames of a segment whose magnitude needs no more
TRANS_SPEED = 0.05  # default mean translation per frame, m (0.5 m/s at 10 fps)
ROT_SPEED = 3.0  # default mean rotation per frame, degrees
MAX_FRAMES = 100_000  # per segment
ORBIT_RADIUS = 1.5  # default orbit radius, m
ORBIT_MAX_PITCH = 60.0  # |pitch| used to place the orbit centre is clamped to this, degrees
SHAKE_ROT_DEG = 0.3  # handheld shake: rotation std per axis
SHAKE_TRANS_M = 0.001  # handheld shake: translation std per axis
SHAKE_RAMP = 4  # frames over which shake ramps in

MOTION_WORDS = (
    "orbit", "dolly", "truck", "pedestal", "pan", "tilt", "roll", "zoom",
    "handheld", "walk", "look_at", "still", "hold",
)  # fmt: skip
_ALIASES = {"lookat": "look_at", "look-at": "look_at"}
_EZ = np.array([0.0, 0.0, 1.0])
_NUM = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?$")


class MotionSyntaxError(InputError):
    """A prompt that does not follow the motion language; the message names the bad token."""


# --------------------------------------------------------------------------------------------
# Segments
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Segment:
    """One motion of a program. ``frames`` is the number of frame steps it lasts (>= 1)."""

    frames: int
    look_at: tuple[float, float, float] | None = None  # prompt-frame point to aim at, or None


@dataclass(frozen=True, kw_only=True)
class Orbit(Segment):
    angle: float  # degrees, + = counter-clockwise seen from above
    radius: float = ORBIT_RADIUS  # m, horizontal
    height: float = 0.0  # m, rise over the segment


@dataclass(frozen=True, kw_only=True)
class Dolly(Segment):
    distance: float  # m along the start camera z (+ = forward)


@dataclass(frozen=True, kw_only=True)
class Truck(Segment):
    distance: float  # m along the start camera x (+ = right)


@dataclass(frozen=True, kw_only=True)
class Pedestal(Segment):
    distance: float  # m along world z (+ = up)


@dataclass(frozen=True, kw_only=True)
class Pan(Segment):
    angle: float  # degrees about world up (+ = left)


@dataclass(frozen=True, kw_only=True)
class Tilt(Segment):
    angle: float  # degrees about camera x (+ = up)


@dataclass(frozen=True, kw_only=True)
class Roll(Segment):
    angle: float  # degrees about camera z (+ = right: image top moves right)


@dataclass(frozen=True, kw_only=True)
class Zoom(Segment):
    factor: float  # focal length multiplier at the end of the segment (> 0)


@dataclass(frozen=True, kw_only=True)
class HandheldWalk(Segment):
    distance: float  # horizontal path length, m (> 0)


@dataclass(frozen=True, kw_only=True)
class WalkPath(Segment):
    waypoints: tuple[tuple[float, float], ...]  # prompt-frame (x forward, y left), m


@dataclass(frozen=True, kw_only=True)
class LookAt(Segment):
    target: tuple[float, float, float]  # prompt-frame point, m


@dataclass(frozen=True, kw_only=True)
class Still(Segment):
    pass


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


class _Parser:
    """Recursive-descent parser over whitespace-separated, lower-cased words (1-based positions)."""

    def __init__(self, prompt: str):
        self.prompt = " ".join(prompt.split())
        text = re.sub(r"\s*,\s*", ",", self.prompt.lower())
        self.words = [_ALIASES.get(w, w) for w in text.split()]
        self.i = 0

    # -- helpers ---------------------------------------------------------------------------
    def fail(self, msg: str, pos: int | None = None) -> MotionSyntaxError:
        pos = self.i if pos is None else pos
        where = f"at position {pos + 1} in" if pos < len(self.words) else "at the end of"
        return MotionSyntaxError(f"{msg} ({where} '{self.prompt}')")

    def peek(self) -> str | None:
        return self.words[self.i] if self.i < len(self.words) else None

    def next(self) -> str | None:
        w = self.peek()
        self.i += 1
        return w

    def _got(self, w: str | None) -> str:
        return "end of prompt" if w is None else f"'{w}'"

    def number(self, after: str) -> float:
        w = self.peek()
        if w is None or not _NUM.match(w):
            raise self.fail(f"expected a number after '{after}', got {self._got(w)}")
        self.i += 1
        return float(w)

    def positive(self, after: str, what: str) -> float:
        pos = self.i
        v = self.number(after)
        if v <= 0:
            raise self.fail(f"{what} must be > 0, got {v:g}", pos)
        return v

    def direction(self, motion: str, words: tuple[str, str]) -> float:
        """Read a direction word; returns +1 for ``words[0]`` and -1 for ``words[1]``."""
        w = self.peek()
        if w not in words:
            msg = (
                f"'{motion}' needs a direction ({'|'.join(words)})"
                if w is None
                else f"'{w}' is not a direction for {motion}; use {'|'.join(words)}"
            )
            raise self.fail(msg)
        self.i += 1
        return 1.0 if w == words[0] else -1.0

    def waypoint(self) -> tuple[float, float] | None:
        w = self.peek()
        if w is None or "," not in w:
            return None
        parts = w.split(",")
        if len(parts) != 2 or not all(_NUM.match(p) for p in parts):
            raise self.fail(f"bad waypoint '{w}'; write x,y in metres, e.g. 1.5,-0.5")
        self.i += 1
        return float(parts[0]), float(parts[1])

    # -- grammar ---------------------------------------------------------------------------
    def program(self) -> list[Segment]:
        if not self.words:
            raise MotionSyntaxError(f"empty motion prompt; valid words: {', '.join(MOTION_WORDS)}")
        segments = [self.segment()]
        while self.peek() is not None:
            self.i += 1  # 'then' (segment() stops only at 'then' or the end)
            if self.peek() is None:
                raise self.fail("nothing after 'then'", self.i - 1)
            if self.peek() == "then":
                raise self.fail("empty segment between two 'then'")
            segments.append(self.segment())
        return segments

    def segment(self) -> Segment:
        start = self.i
        head = self.next()
        if head not in MOTION_WORDS:
            close = difflib.get_close_matches(head or "", MOTION_WORDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise MotionSyntaxError(
                f"unknown motion word '{head}' at position {start + 1} in '{self.prompt}'{hint}; "
                f"valid words: {', '.join(MOTION_WORDS)}"
            )
        kw: dict = {}
        options = ["frames", "look_at"]
        if head == "orbit":
            w = self.peek()
            sign = 1.0
            if w in ("left", "right"):
                self.i += 1
                sign = -1.0 if w == "left" else 1.0  # left = clockwise from above
            elif w is None or not _NUM.match(w):
                raise self.fail(f"expected a number or left|right after 'orbit', got {self._got(w)}")
            kw["angle"] = sign * self.number(w if w in ("left", "right") else "orbit")
            options = ["radius", "height", "frames"]
        elif head in ("dolly", "truck", "pedestal"):
            dirs = {"dolly": ("forward", "backward"), "truck": ("right", "left"), "pedestal": ("up", "down")}[head]
            sign = self.direction(head, dirs)
            kw["distance"] = sign * self.number(self.words[self.i - 1])
        elif head in ("pan", "tilt", "roll"):
            dirs = {"pan": ("left", "right"), "tilt": ("up", "down"), "roll": ("right", "left")}[head]
            sign = self.direction(head, dirs)
            kw["angle"] = sign * self.number(self.words[self.i - 1])
            options = ["frames"]
        elif head == "zoom":
            kw["factor"] = self.positive("zoom", "zoom factor")
        elif head == "handheld":
            w = self.peek()
            if w != "walk":
                raise self.fail(f"expected 'walk' after 'handheld', got {self._got(w)}")
            self.i += 1
            kw["distance"] = self.positive("walk", "handheld walk distance")
        elif head == "walk":
            w = self.peek()
            if w != "path":
                raise self.fail(f"expected 'path' after 'walk', got {self._got(w)}")
            self.i += 1
            pts = []
            while (p := self.waypoint()) is not None:
                pts.append(p)
            if not pts:
                raise self.fail(f"expected a waypoint x,y after 'path', got {self._got(self.peek())}")
            kw["waypoints"] = tuple(pts)
        elif head == "look_at":
            kw["target"] = self._point("look_at")
            options = ["frames"]
        # still / hold take no arguments
        self._options(head, options, kw)
        return _build(head, kw)

    def _point(self, after: str) -> tuple[float, float, float]:
        x = self.number(after)
        y = self.number(self.words[self.i - 1])
        z = self.number(self.words[self.i - 1])
        return (x, y, z)

    def _options(self, head: str, options: list[str], kw: dict) -> None:
        seen: set[str] = set()
        while (w := self.peek()) is not None and w != "then":
            if w not in options:
                valid = ", ".join([*options, "then"])
                if w == "look_at" and head in ("orbit", "pan", "tilt", "roll", "look_at"):
                    raise self.fail(f"look_at cannot modify '{head}' (it sets the orientation itself)")
                if w in MOTION_WORDS:
                    raise self.fail(f"'{w}' starts a new motion; join segments with 'then'")
                raise self.fail(f"unexpected '{w}' after '{head}' (expected one of: {valid})")
            if w in seen:
                raise self.fail(f"'{w}' given twice")
            seen.add(w)
            self.i += 1
            if w == "frames":
                n = self.peek()
                if n is None or not re.fullmatch(r"\+?\d+", n) or not 1 <= int(n) <= MAX_FRAMES:
                    raise self.fail(f"expected a whole number of frames (1..{MAX_FRAMES}) after 'frames', got {self._got(n)}")
                self.i += 1
                kw["frames"] = int(n)
            elif w == "radius":
                kw["radius"] = self.positive("radius", "orbit radius")
            elif w == "height":
                kw["height"] = self.number("height")
            elif w == "look_at":
                kw["look_at"] = self._point("look_at")


def _build(head: str, kw: dict) -> Segment:
    """Instantiate a segment, filling the default frame count from its magnitude."""
    frames = kw.pop("frames", None)

    def default(trans: float = 0.0, rot: float = 0.0) -> int:
        need = max(trans / TRANS_SPEED, rot / ROT_SPEED)
        return max(DEFAULT_FRAMES, math.ceil(need - 1e-9))

    if head == "orbit":
        radius = kw.get("radius", ORBIT_RADIUS)
        arc = radius * math.radians(abs(kw["angle"])) + abs(kw.get("height", 0.0))
        return Orbit(frames=frames or default(arc, abs(kw["angle"])), **kw)
    if head in ("dolly", "truck", "pedestal"):
        cls = {"dolly": Dolly, "truck": Truck, "pedestal": Pedestal}[head]
        return cls(frames=frames or default(trans=abs(kw["distance"])), **kw)
    if head in ("pan", "tilt", "roll"):
        cls = {"pan": Pan, "tilt": Tilt, "roll": Roll}[head]
        return cls(frames=frames or default(rot=abs(kw["angle"])), **kw)
    if head == "zoom":
        return Zoom(frames=frames or DEFAULT_FRAMES, **kw)
    if head == "handheld":
        return HandheldWalk(frames=frames or default(trans=kw["distance"]), **kw)
    if head == "walk":
        # assume the walk starts at the prompt-frame origin heading +x; curves add ~20 %
        d = np.diff(np.array([(0.0, 0.0), *kw["waypoints"]]), axis=0)
        d = d[np.linalg.norm(d, axis=1) > 1e-9]
        turns = np.diff(np.unwrap(np.concatenate([[0.0], np.arctan2(d[:, 1], d[:, 0])])))
        effort = float(np.linalg.norm(d, axis=1).sum() + _walk_effort(0.0, turns).sum())
        return WalkPath(frames=frames or default(trans=effort * 1.2), **kw)
    if head == "look_at":
        # assume the turn starts from the canonical start (at the origin, looking +x)
        x, y, z = kw["target"]
        turn = math.degrees(math.atan2(math.hypot(y, z), x)) if (x, y, z) != (0, 0, 0) else 0.0
        return LookAt(frames=frames or default(rot=turn), **kw)
    return Still(frames=frames or DEFAULT_FRAMES, **kw)


# --------------------------------------------------------------------------------------------
# Trajectories
# --------------------------------------------------------------------------------------------


@dataclass
class Trajectory:
    """Per-frame camera poses and intrinsics of a prompt."""

    c2w: np.ndarray  # (N,4,4) float64 camera-to-world, OpenCV axes, world z-up
    K: np.ndarray  # (N,3,3) float64 intrinsics per frame (zoom changes focal)
    width: int
    height: int
    prompt: str
    segment_frames: list[tuple[int, int]] = field(default_factory=list)  # inclusive (first, last) per segment


def _ease(n: int) -> np.ndarray:
    """Minimum-jerk progress s(t) = 10t^3 - 15t^4 + 6t^5 at t = i/n, i = 1..n. Shape (n,)."""
    t = np.arange(1, n + 1, dtype=np.float64) / n
    return t**3 * (10 - 15 * t + 6 * t**2)


def _rotvec_to_rotmat(rv: np.ndarray) -> np.ndarray:
    """(..., 3) rotation vectors (rad) -> (..., 3, 3) rotation matrices, via roma."""
    return roma.rotvec_to_rotmat(torch.as_tensor(rv, dtype=torch.float64)).numpy()


def _rotmat_to_rotvec(R: np.ndarray) -> np.ndarray:
    return roma.rotmat_to_rotvec(torch.as_tensor(R, dtype=torch.float64)).numpy()


def _slerp_each(Ra: np.ndarray, Rb: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-frame geodesic interpolation ``Ra exp(w log(Ra^T Rb))``; Ra, Rb (N,3,3), w (N,)."""
    rel = _rotmat_to_rotvec(np.swapaxes(Ra, -1, -2) @ Rb)  # N,3
    return Ra @ _rotvec_to_rotmat(rel * w[:, None])


def _angle(Ra: np.ndarray, Rb: np.ndarray) -> float:
    """Geodesic angle (rad) between two rotations."""
    return float(roma.rotmat_geodesic_distance(torch.as_tensor(Ra), torch.as_tensor(Rb)))


def _yaw(angles: np.ndarray) -> np.ndarray:
    """Rotations about world +z by ``angles`` (rad), (N,) -> (N,3,3)."""
    return _rotvec_to_rotmat(angles[:, None] * _EZ)


def _ground_forward(R: np.ndarray) -> np.ndarray:
    """Unit horizontal forward direction of a camera: its optical axis projected on the ground,
    or, when it looks straight up/down, its image-up direction (-y) projected."""
    for v in (R[:, 2], -R[:, 1]):
        f = v - v[2] * _EZ
        n = np.linalg.norm(f)
        if n > 1e-6:
            return f / n
    return np.array([1.0, 0.0, 0.0])  # unreachable for a rotation matrix


def _heading(v: np.ndarray) -> float:
    return float(math.atan2(v[1], v[0]))


def _aim(eyes: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Level camera rotations (N,3,3) at ``eyes`` (N,3) looking at ``target`` (3,)."""
    d = np.linalg.norm(target[None] - eyes, axis=1)
    if (d < 1e-6).any():
        raise InputError(f"look_at target {tuple(np.round(target, 3))} coincides with the camera at a frame of the path")
    T = _look_at_pose(torch.as_tensor(eyes), torch.as_tensor(np.broadcast_to(target, eyes.shape).copy()))
    return T[:, :3, :3].numpy()


def _hermite_path(P: np.ndarray, t0: np.ndarray, samples: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Dense C1 cubic Hermite curve through 2D points ``P`` (m+1,2) leaving P[0] along ``t0``.

    Piece j goes P_j -> P_{j+1} with tangents L_j T_j, L_j T_{j+1}, L_j = |P_{j+1} - P_j|; interior
    unit tangents T_j bisect the incoming and outgoing directions, the last one is the last chord.
    Returns points (M,2) and their derivative directions (M,2).
    """
    d = np.diff(P, axis=0)
    L = np.linalg.norm(d, axis=1)
    u = d / L[:, None]
    T = [t0]
    for j in range(1, len(P) - 1):
        b = u[j - 1] + u[j]
        if np.linalg.norm(b) < 1e-9:  # U-turn: leave to the left
            b = np.array([-u[j][1], u[j][0]])
        T.append(b / np.linalg.norm(b))
    T.append(u[-1])
    s = np.linspace(0.0, 1.0, samples)[:, None]
    h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
    g00, g10, g01, g11 = 6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1, -6 * s**2 + 6 * s, 3 * s**2 - 2 * s
    pts, der = [], []
    for j in range(len(d)):
        a, b, ta, tb = P[j], P[j + 1], L[j] * T[j], L[j] * T[j + 1]
        pts.append(h00 * a + h10 * ta + h01 * b + h11 * tb)
        der.append(g00 * a + g10 * ta + g01 * b + g11 * tb)
        if j < len(d) - 1:
            pts[-1], der[-1] = pts[-1][:-1], der[-1][:-1]
    return np.concatenate(pts), np.concatenate(der)


def _walk_effort(length: np.ndarray | float, turn: np.ndarray | float) -> np.ndarray | float:
    """Walking "effort" of moving ``length`` m while turning ``turn`` rad: ``length + k |turn|``
    with ``k = TRANS_SPEED / ROT_SPEED`` (m per rad), so a walker at the default pace slows down in
    sharp turns and neither speed limit is exceeded."""
    return length + TRANS_SPEED / math.radians(ROT_SPEED) * np.abs(turn)


def _along_walk(pts: np.ndarray, heading: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample a dense curve ``pts`` (M,2) with unwrapped headings (M,) at fractions ``s`` (N,) of
    its cumulative walking effort (see ``_walk_effort``). Returns points (N,2), headings (N,)."""
    effort = _walk_effort(np.linalg.norm(np.diff(pts, axis=0), axis=1), np.diff(heading))
    cum = np.concatenate([[0.0], np.cumsum(effort)])
    q = s * cum[-1]
    xy = np.stack([np.interp(q, cum, pts[:, 0]), np.interp(q, cum, pts[:, 1])], axis=1)
    return xy, np.interp(q, cum, heading)


def _smooth_noise(rng: np.random.Generator, n: int, dims: int, sigma_frames: float = 1.5) -> np.ndarray:
    """Stationary Gaussian-filtered white noise with unit variance per sample, (n, dims)."""
    half = math.ceil(3 * sigma_frames)
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_frames) ** 2)
    k /= np.sqrt((k**2).sum())
    w = rng.standard_normal((n + 2 * half, dims))
    return np.stack([np.convolve(w[:, j], k, mode="valid") for j in range(dims)], axis=1)


@dataclass
class _State:
    R: np.ndarray  # (3,3) current rotation
    p: np.ndarray  # (3,) current centre
    K: np.ndarray  # (3,3) current intrinsics
    frame: np.ndarray  # (4,4) prompt frame -> world


@dataclass
class _Piece:
    p: np.ndarray  # N,3 centres
    R: np.ndarray  # N,3,3 base rotations (before shake)
    K: np.ndarray  # N,3,3
    shake_R: np.ndarray | None = None  # N,3,3 camera-frame rotation applied after the base
    shake_t: np.ndarray | None = None  # N,3 camera-frame offset


def _to_world(st: _State, x: float, y: float, z: float) -> np.ndarray:
    return (st.frame @ np.array([x, y, z, 1.0]))[:3]


def _gen_segment(seg: Segment, st: _State, rng: np.random.Generator) -> _Piece:
    n = seg.frames
    s = _ease(n)
    R0, p0 = st.R, st.p
    Rs = np.broadcast_to(R0, (n, 3, 3)).copy()
    ps = np.broadcast_to(p0, (n, 3)).copy()
    Ks = np.broadcast_to(st.K, (n, 3, 3)).copy()
    if isinstance(seg, Orbit):
        f = _ground_forward(R0)
        pitch = math.asin(float(np.clip(R0[2, 2], -1.0, 1.0)))
        pitch = float(np.clip(pitch, -math.radians(ORBIT_MAX_PITCH), math.radians(ORBIT_MAX_PITCH)))
        c = p0 + seg.radius * f + seg.radius * math.tan(pitch) * _EZ
        rot = _yaw(math.radians(seg.angle) * s)  # N,3,3
        ps = c + (rot @ (p0 - c)) + seg.height * s[:, None] * _EZ
        L0 = _aim(p0[None], c)[0]
        Rs = _aim(ps, c) @ (L0.T @ R0)
    elif isinstance(seg, Dolly | Truck | Pedestal):
        axis = R0[:, 2] if isinstance(seg, Dolly) else R0[:, 0] if isinstance(seg, Truck) else _EZ
        ps = p0 + seg.distance * s[:, None] * axis
    elif isinstance(seg, Pan):
        Rs = _yaw(math.radians(seg.angle) * s) @ R0
    elif isinstance(seg, Tilt | Roll):
        axis = np.array([1.0, 0.0, 0.0]) if isinstance(seg, Tilt) else _EZ
        Rs = R0 @ _rotvec_to_rotmat(math.radians(seg.angle) * s[:, None] * axis)
    elif isinstance(seg, Zoom):
        Ks[:, :2, :2] = st.K[:2, :2] * (seg.factor**s)[:, None, None]
    elif isinstance(seg, LookAt):
        R1 = _aim(p0[None], _to_world(st, *seg.target))[0]
        Rs = _slerp_each(Rs, np.broadcast_to(R1, (n, 3, 3)).copy(), s)
    elif isinstance(seg, WalkPath):
        pts = [p0[:2]] + [_to_world(st, x, y, 0.0)[:2] for x, y in seg.waypoints]
        P = [pts[0]]
        for q in pts[1:]:
            if np.linalg.norm(q - P[-1]) > 1e-9:
                P.append(q)
        if len(P) > 1:
            f = _ground_forward(R0)
            curve, der = _hermite_path(np.array(P), f[:2])
            h = np.unwrap(np.concatenate([[_heading(f)], np.arctan2(der[:, 1], der[:, 0])]))[1:]
            xy, h = _along_walk(curve, h, s)
            ps = np.concatenate([xy, np.full((n, 1), p0[2])], axis=1)
            Rs = _yaw(h - _heading(f)) @ R0
    elif isinstance(seg, HandheldWalk):
        return _handheld(seg, st, rng, s)
    # Still: nothing moves
    return _Piece(ps, Rs, Ks)


def _handheld(seg: HandheldWalk, st: _State, rng: np.random.Generator, s: np.ndarray) -> _Piece:
    """Smooth random walk of horizontal length ``seg.distance`` plus handheld shake (see module doc)."""
    n, D = seg.frames, seg.distance
    f = _ground_forward(st.R)
    u = np.linspace(0.0, 1.0, 2049)
    cycles = D * rng.uniform(0.15, 0.45, 3)  # heading oscillations over the walk (per metre of walk)
    amp = np.radians(rng.uniform(8.0, 18.0, 3))
    phase = rng.uniform(0, 2 * np.pi, 3)
    dh = (amp * (np.sin(2 * np.pi * cycles * u[:, None] + phase) - np.sin(phase))).sum(1)  # M
    h = _heading(f) + dh
    vel = np.stack([np.cos(h), np.sin(h)], axis=1) * D  # d(xy)/du, |.| = D
    xy = np.concatenate([[[0.0, 0.0]], np.cumsum(0.5 * (vel[1:] + vel[:-1]) * np.diff(u)[:, None], axis=0)])
    bob_c, bob_ph = D * rng.uniform(0.5, 1.0), rng.uniform(0, 2 * np.pi)
    bob = 0.01 * (np.sin(2 * np.pi * bob_c * u + bob_ph) - np.sin(bob_ph))
    # sample at the eased progress: xy is parameterised by arc length (speed D), so u = s
    x = np.interp(s, u, xy[:, 0])
    y = np.interp(s, u, xy[:, 1])
    z = np.interp(s, u, bob)
    hs = np.interp(s, u, dh)
    ps = st.p + np.stack([x, y, z], axis=1)
    Rs = _yaw(hs) @ st.R
    env = np.minimum(1.0, np.arange(1, n + 1) / SHAKE_RAMP)[:, None]
    rv = np.radians(SHAKE_ROT_DEG) * _smooth_noise(rng, n, 3) * env
    tr = SHAKE_TRANS_M * _smooth_noise(rng, n, 3) * env
    return _Piece(ps, Rs, np.broadcast_to(st.K, (n, 3, 3)).copy(), _rotvec_to_rotmat(rv), tr)


# --------------------------------------------------------------------------------------------
# Program
# --------------------------------------------------------------------------------------------


def _check_pose(c2w: np.ndarray | torch.Tensor) -> np.ndarray:
    T = np.asarray(c2w.detach().cpu() if isinstance(c2w, torch.Tensor) else c2w, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise InputError(f"start_c2w must be a finite 4x4 camera-to-world matrix, got shape {T.shape}")
    R = T[:3, :3]
    if np.abs(R.T @ R - np.eye(3)).max() > 1e-4 or np.linalg.det(R) < 0:
        raise InputError("start_c2w rotation is not orthonormal with det +1")
    return T


def _check_K(K: np.ndarray | torch.Tensor) -> np.ndarray:
    K = np.asarray(K.detach().cpu() if isinstance(K, torch.Tensor) else K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"K must be a finite 3x3 intrinsics matrix with positive focal lengths, got shape {K.shape}")
    return K


def _canonical_start() -> np.ndarray:
    """Camera at the origin looking along +x, level, world z-up."""
    return _look_at_pose(torch.zeros(3), torch.tensor([1.0, 0.0, 0.0])).numpy()


@dataclass
class MotionProgram:
    """A parsed prompt: a list of typed segments that turns any start pose into a trajectory."""

    segments: list[Segment]
    prompt: str = ""

    @property
    def n_frames(self) -> int:
        """Frames of the trajectory: the start frame plus every segment's frame steps."""
        return 1 + sum(seg.frames for seg in self.segments)

    def frame_ranges(self) -> list[tuple[int, int]]:
        """Inclusive (first, last) frame index of each segment; last of k == first of k+1."""
        out, start = [], 0
        for seg in self.segments:
            out.append((start, start + seg.frames))
            start += seg.frames
        return out

    def trajectory(self, start_c2w: np.ndarray, K: np.ndarray, width: int, height: int, seed: int = 0) -> Trajectory:
        """Poses and intrinsics of every frame, starting at ``start_c2w`` with intrinsics ``K``.

        Random parts (handheld walk) draw from ``np.random.default_rng([seed, segment_index])``.
        """
        T0 = _check_pose(start_c2w)
        K0 = _check_K(K)
        f = _ground_forward(T0[:3, :3])
        frame = np.eye(4)
        frame[:3, 0], frame[:3, 1], frame[:3, 2], frame[:3, 3] = f, np.cross(_EZ, f), _EZ, T0[:3, 3]
        st = _State(R=T0[:3, :3].copy(), p=T0[:3, 3].copy(), K=K0.copy(), frame=frame)
        poses, Ks = [T0.copy()], [K0.copy()]
        for k, seg in enumerate(self.segments):
            piece = _gen_segment(seg, st, np.random.default_rng([seed, k]))
            R = piece.R
            if seg.look_at is not None:
                target = _to_world(st, *seg.look_at)
                aim = _aim(piece.p, target)
                if _angle(st.R, _aim(st.p[None], target)[0]) < 1e-6:  # already aiming: exact from frame 1
                    R = aim
                else:  # blend the aim in over the first half of the segment
                    w = np.concatenate([_ease(math.ceil(seg.frames / 2)), np.ones(seg.frames)])[: seg.frames]
                    R = _slerp_each(R, aim, w)
            p = piece.p
            if piece.shake_R is not None:
                p = p + (R @ piece.shake_t[:, :, None])[:, :, 0]
                R = R @ piece.shake_R
            T = np.broadcast_to(np.eye(4), (seg.frames, 4, 4)).copy()
            T[:, :3, :3], T[:, :3, 3] = R, p
            poses.extend(T)
            Ks.extend(piece.K)
            st.R, st.p, st.K = R[-1].copy(), p[-1].copy(), piece.K[-1].copy()
        return Trajectory(
            c2w=np.stack(poses),
            K=np.stack(Ks),
            width=int(width),
            height=int(height),
            prompt=self.prompt,
            segment_frames=self.frame_ranges(),
        )

    def extent(self, seed: int = 0) -> np.ndarray:
        """(N,3) camera centres for the canonical start (origin, looking +x, level, z-up).

        In this frame world coordinates equal prompt-frame coordinates; any other start differing
        by a yaw and a translation moves the whole path rigidly with it.
        """
        K = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        return self.trajectory(_canonical_start(), K, 1, 1, seed).c2w[:, :3, 3]


def parse_prompt(prompt: str) -> MotionProgram:
    """Parse and validate a motion prompt; raises ``MotionSyntaxError`` naming the bad token."""
    if not isinstance(prompt, str):
        raise MotionSyntaxError(f"a motion prompt must be a string, got {type(prompt).__name__}")
    return MotionProgram(segments=_Parser(prompt).program(), prompt=" ".join(prompt.split()))


def prompt_to_trajectory(
    prompt: str, start_c2w: np.ndarray, K: np.ndarray, width: int, height: int, seed: int = 0
) -> Trajectory:
    """``parse_prompt(prompt).trajectory(start_c2w, K, width, height, seed)``."""
    return parse_prompt(prompt).trajectory(start_c2w, K, width, height, seed)
