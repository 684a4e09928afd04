"""The prompt writer: a one-line task description -> many motion-language prompts.

Template mode (default) reads *cues* from the task (``parse_task``) and composes multi-segment
prompts whose kinds, magnitudes and frame counts are drawn from cue-dependent distributions:

=====================  ======================================================================
cue words              effect
=====================  ======================================================================
slow, gentle, careful  per-frame speed x0.45 (more frames for the same motion)
fast, quick, rapid     per-frame speed x2
handheld, phone        mostly ``handheld walk`` segments
orbit, around, object  mostly ``orbit`` segments
loop (closure), return every prompt returns to its start position and view
walk, walkthrough      mostly ``walk path`` / ``handheld walk``
pan, look around       mostly ``pan`` (tilt, zoom, dolly, truck, pedestal likewise)
small/large rotation   rotation magnitudes x0.35 / x1.6
static, tripod         no translation: pan, tilt, zoom, still
short / long           1-2 / 3-5 segments (default 2-3)
large, hall, outdoor   translation magnitudes and the allowed extent x1.8 (indoor, room: x1)
=====================  ======================================================================

Every prompt is checked before it is returned (``check_prompt``): it parses, its frame count is
at most ``max_frames``, its path from the canonical start (``MotionProgram.extent``) stays inside
a room-sized box (horizontal span <= 3 m x scale, height change <= 0.7 m x scale), no ``look_at``
target lies on the path, and the camera actually moves, turns or zooms. Prompts are drawn per index from ``default_rng([seed, i, hash(cues)])``, so
the first k prompts of a larger n are the same; the scene seed of prompt i depends only on
(seed, i), the prompt text also on the task's cues.

LM mode (``lm_path`` set) loads a local transformers causal LM and tokenizer
(``local_files_only=True``), shows it the task, the grammar and few-shot template prompts, samples
continuations with a seeded ``torch.Generator`` (temperature + nucleus sampling in an explicit
loop, no global RNG), keeps the lines that pass the same checks and fills up with templates;
``PromptSpec.source`` says where each prompt came from and the count is logged.
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vibe3r.errors import InputError
from vibe3r.video_gen.motion import MotionProgram, parse_prompt

log = logging.getLogger(__name__)

BASE_TRANS_SPEED = 0.035  # m per frame at normal speed (0.35 m/s at 10 fps)
BASE_ROT_SPEED = 2.0  # degrees per frame at normal speed
MAX_SPAN = 3.0  # m, horizontal extent of a path (x scale)
MAX_RISE = 0.7  # m, height change of a path (x scale)
KINDS = ("orbit", "dolly", "truck", "pedestal", "pan", "tilt", "roll", "zoom", "handheld", "walk", "still")
_BASE_WEIGHTS = {
    "orbit": 1.0, "dolly": 1.0, "truck": 0.7, "pedestal": 0.4, "pan": 1.0, "tilt": 0.5, "roll": 0.15,
    "zoom": 0.15, "handheld": 0.6, "walk": 0.6, "still": 0.2,
}  # fmt: skip
_CUES = {  # kind -> task words that ask for it
    "orbit": r"orbit\w*|around|object[- ]centric|turntable|circl\w*",
    "dolly": r"dolly\w*|push[- ]in|forward\w*",
    "truck": r"truck\w*|sideways|lateral\w*|strafe\w*",
    "pedestal": r"pedestal\w*|crane\w*|rise|rising|vertical\w*",
    "pan": r"pan|pans|panning|look(ing)? around|sweep\w*",
    "tilt": r"tilt\w*",
    "roll": r"roll\w*",
    "zoom": r"zoom\w*",
    "handheld": r"handheld|hand-held|phone|shaky",
    "walk": r"walk\w*|walkthrough",
}
_EMPHASIS = 6.0  # weight multiplier of a kind the task names


@dataclass(frozen=True)
class PromptSpec:
    """One motion prompt and the scene/trajectory seed to render it with."""

    prompt: str
    seed: int
    source: str = "template"  # "template" or "lm"


@dataclass(frozen=True)
class TaskCues:
    """What a task description asks for (see the module docstring for the word list)."""

    speed: float = 1.0  # per-frame speed multiplier
    rotation: float = 1.0  # rotation magnitude multiplier
    scale: float = 1.0  # translation magnitude and extent multiplier
    loop: bool = False  # prompts return to their start
    static: bool = False  # no translation
    segments: tuple[int, int] = (2, 3)  # segments per prompt, inclusive range
    weights: dict[str, float] = field(default_factory=lambda: dict(_BASE_WEIGHTS))


def parse_task(task: str) -> TaskCues:
    """Read the cues of a one-line task description (case-insensitive word matches)."""
    t = " " + task.lower() + " "

    def has(pattern: str) -> bool:
        return re.search(rf"(?<![a-z])({pattern})(?![a-z])", t) is not None

    speed = 0.45 if has(r"slow\w*|gentl\w*|careful\w*|smooth\w*") else 2.0 if has(r"fast|quick\w*|rapid\w*|aggressive\w*|dynamic") else 1.0
    rotation = 1.0
    if has(r"small rotations?|little rotations?|mostly translation|few rotations?|low rotation"):
        rotation = 0.35
    elif has(r"large rotations?|big rotations?|wide rotations?"):
        rotation = 1.6
    scale = 1.8 if has(r"large|hall\w*|outdoor\w*|big rooms?|warehouse") else 1.0
    static = has(r"static|tripod|no translation")
    segments = (1, 2) if has(r"short|simple") else (3, 5) if has(r"long|complex") else (2, 3)
    weights = dict(_BASE_WEIGHTS)
    for kind, pattern in _CUES.items():
        if has(pattern):
            weights[kind] *= _EMPHASIS
    if has(r"handheld|hand-held|phone"):  # a handheld capture also walks a bit less in straight lines
        weights["dolly"] *= 0.5
        weights["truck"] *= 0.5
    if static:
        for kind in ("orbit", "dolly", "truck", "pedestal", "handheld", "walk"):
            weights[kind] = 0.0
        weights["still"] *= 3
    return TaskCues(
        speed=speed,
        rotation=rotation,
        scale=scale,
        loop=has(r"loops?|loop[- ]closures?|closures?|return\w*|revisit\w*|round[- ]trips?"),
        static=static,
        segments=segments,
        weights=weights,
    )


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------


def _fmt(x: float, nd: int = 2) -> str:
    """``x`` with at most ``nd`` decimals and no trailing zeros: 1.50 -> '1.5', 30 -> '30'."""
    s = f"{x:.{nd}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


class _Composer:
    """Builds one prompt segment by segment, tracking the camera in the canonical frame."""

    def __init__(self, cues: TaskCues, rng: np.random.Generator):
        self.c, self.rng = cues, rng
        self.ts = BASE_TRANS_SPEED * cues.speed * rng.uniform(0.75, 1.25)  # m per frame
        self.rs = BASE_ROT_SPEED * cues.speed * rng.uniform(0.75, 1.25)  # deg per frame
        self.parts: list[str] = []

    def frames(self, trans: float = 0.0, rot: float = 0.0, least: int = 6) -> int:
        return max(least, math.ceil(max(trans / self.ts, rot / self.rs)))

    def pose(self) -> tuple[np.ndarray, float]:
        """Current camera centre and heading (rad) in the prompt frame."""
        if not self.parts:
            return np.zeros(3), 0.0
        prog = parse_prompt(" then ".join(self.parts))
        T = prog.trajectory(_CANON, np.eye(3), 1, 1).c2w[-1]
        f = T[:3, 2] if abs(T[2, 2]) < 0.99 else -T[:3, 1]
        return T[:3, 3], math.atan2(f[1], f[0])

    def ahead(self, dist: float, side: float, dz: float) -> tuple[float, float, float]:
        """Prompt-frame point ``dist`` ahead and ``side`` to the left of the current camera."""
        p, h = self.pose()
        return (
            p[0] + dist * math.cos(h) - side * math.sin(h),
            p[1] + dist * math.sin(h) + side * math.cos(h),
            p[2] + dz,
        )

    def maybe_look_at(self, prob: float = 0.25) -> str:
        if self.rng.random() >= prob:
            return ""
        x, y, z = self.ahead(self.rng.uniform(2.0, 3.0), self.rng.uniform(-0.8, 0.8), self.rng.uniform(-0.6, 0.1))
        return f" look_at {_fmt(x)} {_fmt(y)} {_fmt(z)}"

    def segment(self, kind: str) -> str:
        r, c = self.rng, self.c
        lr = r.choice(["left", "right"])
        if kind == "orbit":
            ang = r.uniform(30, 150) * c.rotation
            rad, hgt = r.uniform(0.6, 1.5), (r.uniform(-0.3, 0.3) if r.random() < 0.4 else 0.0)
            n = self.frames(rad * math.radians(ang) + abs(hgt), ang)
            h = f" height {_fmt(hgt)}" if hgt else ""
            return f"orbit {lr} {_fmt(ang, 0)} radius {_fmt(rad)}{h} frames {n}"
        if kind == "dolly":
            d = r.uniform(0.3, 1.2) * c.scale
            way = "forward" if r.random() < 0.7 else "backward"
            return f"dolly {way} {_fmt(d)} frames {self.frames(d)}" + self.maybe_look_at()
        if kind == "truck":
            d = r.uniform(0.2, 0.9) * c.scale
            return f"truck {lr} {_fmt(d)} frames {self.frames(d)}" + self.maybe_look_at()
        if kind == "pedestal":
            d = r.uniform(0.1, 0.4)
            return f"pedestal {r.choice(['up', 'down'])} {_fmt(d)} frames {self.frames(d)}"
        if kind == "pan":
            a = r.uniform(15, 90) * c.rotation
            return f"pan {lr} {_fmt(a, 0)} frames {self.frames(rot=a)}"
        if kind == "tilt":
            a = r.uniform(5, 25) * c.rotation
            return f"tilt {r.choice(['up', 'down'])} {_fmt(a, 0)} frames {self.frames(rot=a)}"
        if kind == "roll":
            a = r.uniform(2, 10) * c.rotation
            return f"roll {lr} {_fmt(a, 0)} frames {self.frames(rot=a)}"
        if kind == "zoom":
            f = math.exp(r.uniform(-0.35, 0.45))
            return f"zoom {_fmt(f)} frames {self.frames(rot=30 * abs(math.log(f)), least=8)}"
        if kind == "handheld":
            d = r.uniform(0.5, 1.8) * c.scale
            return f"handheld walk {_fmt(d)} frames {self.frames(d)}" + self.maybe_look_at(0.2)
        if kind == "walk":
            return self.walk(int(r.integers(2, 4)))
        return f"still frames {int(r.integers(4, 13))}"

    def walk(self, k: int, close: bool = False) -> str:
        """``walk path`` through k random waypoints ahead (and back to the start if ``close``).

        Frames cover the polyline length at the translation pace plus its turns at the rotation
        pace (the motion language slows the walker down in turns)."""
        r = self.rng
        p, h = self.pose()
        pts, h0 = [p[:2].copy()], h
        for _ in range(k):
            h += math.radians(r.uniform(-70, 70)) * self.c.rotation**0.5
            pts.append(pts[-1] + r.uniform(0.4, 1.0) * self.c.scale * np.array([math.cos(h), math.sin(h)]))
        if close:
            pts.append(np.zeros(2))
        d = np.diff(np.array(pts), axis=0)
        d = d[np.linalg.norm(d, axis=1) > 1e-6]
        turns = np.diff(np.unwrap(np.concatenate([[h0], np.arctan2(d[:, 1], d[:, 0])])))
        length, turn = float(np.linalg.norm(d, axis=1).sum()), math.degrees(float(np.abs(turns).sum()))
        wp = " ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in pts[1:])
        return f"walk path {wp} frames {math.ceil(1.15 * length / self.ts + turn / self.rs)}"

    def add(self, text: str) -> None:
        self.parts.append(text)

    def text(self) -> str:
        return " then ".join(self.parts)


_CANON = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def _template(cues: TaskCues, rng: np.random.Generator, seed: int, max_frames: int) -> str:
    comp = _Composer(cues, rng)
    kinds = [k for k in KINDS if cues.weights[k] > 0]
    p = np.array([cues.weights[k] for k in kinds])
    p /= p.sum()
    lo, hi = cues.segments
    n_seg = int(rng.integers(lo, hi + 1))
    if cues.loop and not cues.static:
        style = rng.choice(["orbit", "walk", "out_and_back"], p=_loop_style_p(cues))
        if style == "orbit":  # a full turn around a centre ends exactly where it started
            rad = rng.uniform(0.8, 1.6)
            comp.add(f"orbit {rng.choice(['left', 'right'])} 360 radius {_fmt(rad)} frames {comp.frames(rad * 2 * math.pi, 360)}")
            return comp.text()
        if style == "out_and_back":  # a move, a look around, and the same move backwards
            kind = rng.choice(["dolly", "truck"])
            d = rng.uniform(0.4, 1.2) * cues.scale
            a, b = ("forward", "backward") if kind == "dolly" else tuple(rng.permutation(["left", "right"]))
            n = comp.frames(d)
            comp.add(f"{kind} {a} {_fmt(d)} frames {n}")
            ang = rng.uniform(20, 70) * cues.rotation
            lr = rng.permutation(["left", "right"])
            comp.add(f"pan {lr[0]} {_fmt(ang, 0)} frames {comp.frames(rot=ang)}")
            comp.add(f"pan {lr[1]} {_fmt(ang, 0)} frames {comp.frames(rot=ang)}")
            comp.add(f"{kind} {b} {_fmt(d)} frames {n}")
            return comp.text()
        # free segments, then walk back to the start and turn to the start view
        free = [k for k in kinds if k not in ("pedestal", "still")]
        fp = np.array([cues.weights[k] for k in free])
        for kind in rng.choice(free, size=max(0, n_seg - 2), p=fp / fp.sum()):
            comp.add(comp.segment(str(kind)))
        comp.add(comp.walk(int(rng.integers(2, 4)), close=True))
        turn = abs(math.degrees(math.remainder(comp.pose()[1], 2 * math.pi)))
        comp.add(f"look_at 2 0 0 frames {comp.frames(rot=turn + 10)}")
        return comp.text()
    prev = None
    for _ in range(n_seg):
        # no pan/tilt/roll/zoom/still/pedestal twice in a row (when there is a choice)
        no_repeat = prev in ("pan", "tilt", "roll", "zoom", "still", "pedestal")
        q = np.where(np.array(kinds) == prev, 0.0, p) if no_repeat and (p[np.array(kinds) != prev] > 0).any() else p
        for _attempt in range(8):  # redraw a segment that leaves the room box or the frame budget
            kind = str(rng.choice(kinds, p=q / q.sum()))
            seg = comp.segment(kind)
            if check_prompt(" then ".join([*comp.parts, seg]), cues, seed, max_frames, require_motion=False) is not None:
                comp.add(seg)
                prev = kind
                break
    return comp.text()


def _loop_style_p(cues: TaskCues) -> list[float]:
    w = np.array([cues.weights["orbit"] * cues.rotation, cues.weights["walk"] + cues.weights["handheld"], cues.weights["dolly"] + cues.weights["truck"]])
    return list(w / w.sum())


def check_prompt(
    prompt: str, cues: TaskCues, seed: int = 0, max_frames: int = 240, require_motion: bool = True
) -> MotionProgram | None:
    """The parsed program if ``prompt`` is usable, else None.

    Usable: it parses, has at most ``max_frames`` frames, its path from the canonical start fits
    the room box (horizontal span <= ``MAX_SPAN * scale``, height range <= ``MAX_RISE * scale``),
    no look_at target lies on it, and (``require_motion``) the camera moves at least 5 cm, turns at
    least 5 degrees or zooms by at least 5 % somewhere.
    """
    try:
        prog = parse_prompt(prompt)
        if prog.n_frames > max_frames:
            return None
        t = prog.trajectory(_CANON, np.eye(3), 1, 1, seed)
    except InputError:
        return None
    e = t.c2w[:, :3, 3]
    span = e[:, :2].max(0) - e[:, :2].min(0)
    if span.max() > MAX_SPAN * cues.scale or np.ptp(e[:, 2]) > MAX_RISE * cues.scale:
        return None
    if require_motion:
        moved = np.linalg.norm(e - e[0], axis=1).max()
        cos = (np.trace(t.c2w[0, :3, :3].T @ t.c2w[:, :3, :3], axis1=1, axis2=2) - 1) / 2
        turned = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).max()
        zoomed = np.abs(np.log(t.K[:, 0, 0])).max()
        if moved < 0.05 and turned < 5.0 and zoomed < math.log(1.05):
            return None
    return prog


def _spec_seed(seed: int, i: int) -> int:
    return int(np.random.default_rng([seed, i, 7]).integers(0, 2**31 - 1))


def _template_prompts(cues: TaskCues, seed: int, indices: list[int], max_frames: int) -> list[str]:
    out = []
    salt = zlib.crc32(repr(cues).encode())  # different tasks draw different prompts for one seed
    for i in indices:
        rng = np.random.default_rng([seed, i, salt])
        for _ in range(100):
            text = _template(cues, rng, _spec_seed(seed, i), max_frames)
            if check_prompt(text, cues, _spec_seed(seed, i), max_frames) is not None:
                break
        else:  # every draw too long or too wide for the limits: a short pan always fits
            text = "pan left 20 frames 12"
        out.append(text)
    return out


# --------------------------------------------------------------------------------------------
# LM mode
# --------------------------------------------------------------------------------------------

GRAMMAR_HELP = (
    "Grammar: segments joined by 'then'; each is one of: orbit [left|right] DEG [radius M] [height M], "
    "dolly forward|backward M, truck left|right M, pedestal up|down M, pan left|right DEG, tilt up|down DEG, "
    "roll left|right DEG, zoom FACTOR, handheld walk M, walk path x,y x,y ..., look_at X Y Z, still; "
    "each may end with frames N."
)


def few_shot_text(task: str, examples: list[str]) -> str:
    """The text an LM continues: task, grammar, one ``prompt:`` line per example, an open line."""
    lines = [f"Camera motion prompts for: {task}", GRAMMAR_HELP]
    lines += [f"prompt: {ex}" for ex in examples]
    return "\n".join(lines) + "\nprompt:"


@torch.no_grad()
def _sample(
    model: torch.nn.Module,
    ids: torch.Tensor,  # 1,L
    batch: int,
    max_new_tokens: int,
    generator: torch.Generator,
    eos_id: int | None,
    temperature: float = 0.9,
    top_p: float = 0.95,
) -> torch.Tensor:
    """Temperature + nucleus sampling with a KV cache and an explicit generator -> (batch, T) ids."""
    out = model(input_ids=ids.expand(batch, -1), use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1]  # B,V
    toks, done = [], torch.zeros(batch, dtype=torch.bool)
    for _ in range(max_new_tokens):
        probs = torch.softmax(logits.float() / temperature, dim=-1)  # B,V
        sp, idx = probs.sort(dim=-1, descending=True)
        sp[(sp.cumsum(-1) - sp) > top_p] = 0.0  # keep the smallest set with mass >= top_p
        tok = idx.gather(-1, torch.multinomial(sp, 1, generator=generator))  # B,1
        toks.append(tok)
        if eos_id is not None:
            done |= tok[:, 0] == eos_id
            if done.all():
                break
        out = model(input_ids=tok, past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1]
    return torch.cat(toks, dim=1)


def load_lm(lm_path: str) -> tuple[torch.nn.Module, object]:
    """A local causal LM and its tokenizer (``local_files_only``); one-line InputError otherwise."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(lm_path)
    if not path.is_dir():
        raise InputError(f"prompt LM folder not found: {path}")
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot load a causal LM + tokenizer from {path}: {str(exc).splitlines()[0]}") from None
    return model.eval(), tok


def _lm_lines(model: torch.nn.Module, tok, text: str, seed: int, n_samples: int, max_new_tokens: int) -> list[str]:
    """Sample continuations of ``text`` and split them into candidate prompt lines."""
    ids = tok(text, return_tensors="pt").input_ids  # 1,L
    cfg = model.config
    max_pos = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 2048
    ids = ids[:, -(max_pos - max_new_tokens) :]
    eos = tok.eos_token_id
    gen = torch.Generator().manual_seed(seed)
    lines: list[str] = []
    for row in _sample(model, ids, n_samples, max_new_tokens, gen, eos):
        row = row.tolist()
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        for line in tok.decode(row, skip_special_tokens=True).split("\n"):
            line = re.sub(r"^(\s*prompt\s*:)*\s*", "", line, flags=re.I).strip()
            line = line.strip("`'\" ").rstrip(".;")  # quotes and full stops chatty LMs add
            if line:
                lines.append(" ".join(line.split()))
    return lines


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def write_prompts(
    task: str,
    n: int,
    seed: int,
    lm_path: str | None = None,
    *,
    max_frames: int = 240,
    lm_rounds: int = 3,
    max_new_tokens: int = 48,
) -> list[PromptSpec]:
    """``n`` motion prompts for a one-line ``task``, each with its own scene/trajectory seed.

    Templates by default; with ``lm_path`` a local causal LM writes candidates first (``lm_rounds``
    batches of ``max(4, n)`` samples of ``max_new_tokens`` tokens) and templates fill the rest.
    Deterministic for a given (task, n, seed, model).
    """
    if n < 1:
        raise InputError(f"number of prompts must be >= 1, got {n}")
    if not task or not task.strip():
        raise InputError("the prompt writer needs a non-empty task description")
    cues = parse_task(task)
    specs: list[PromptSpec] = []
    if lm_path is not None:
        model, tok = load_lm(lm_path)
        text = few_shot_text(task, _template_prompts(cues, seed + 1_000_003, list(range(6)), max_frames))
        seen: set[str] = set()
        for r in range(lm_rounds):
            for line in _lm_lines(model, tok, text, seed * 1000 + r, max(4, n), max_new_tokens):
                i = len(specs)
                if len(specs) >= n or line in seen:
                    continue
                seen.add(line)
                if check_prompt(line, cues, _spec_seed(seed, i), max_frames) is not None:
                    specs.append(PromptSpec(line, _spec_seed(seed, i), "lm"))
            if len(specs) >= n:
                break
        log.info("prompt writer: %d of %d prompts from the LM at %s, %d from templates", len(specs), n, lm_path, n - len(specs))
    rest = list(range(len(specs), n))
    for i, text in zip(rest, _template_prompts(cues, seed, rest, max_frames), strict=True):
        specs.append(PromptSpec(text, _spec_seed(seed, i), "template"))
    return specs
