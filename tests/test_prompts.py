"""The prompt writer: determinism, validity, cue-dependent distributions, LM mode with a tiny model."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from vibe3r.errors import InputError
from vibe3r.video_gen.motion import HandheldWalk, Orbit, Pan, parse_prompt
from vibe3r.video_gen.prompts import PromptSpec, check_prompt, few_shot_text, parse_task, write_prompts


def per_frame_step(prompt: str, seed: int) -> float:
    e = parse_prompt(prompt).extent(seed)
    return float(np.linalg.norm(np.diff(e, axis=0), axis=1).mean())


def test_prompts_are_deterministic_and_all_parse():
    task = "indoor rooms, slow handheld motion, small rotations"
    a, b = write_prompts(task, 10, seed=3), write_prompts(task, 10, seed=3)
    assert a == b and len(a) == 10
    assert all(isinstance(s, PromptSpec) and s.source == "template" for s in a)
    assert write_prompts(task, 4, seed=3) == a[:4]  # prefix-stable
    c = write_prompts(task, 10, seed=4)
    assert [s.prompt for s in c] != [s.prompt for s in a]
    assert len({s.prompt for s in a}) == 10 and len({s.seed for s in a}) == 10
    cues = parse_task(task)
    for s in a + c:
        assert check_prompt(s.prompt, cues, s.seed) is not None, s.prompt
        assert parse_prompt(s.prompt).n_frames <= 240


@pytest.mark.parametrize(
    "task",
    [
        "indoor rooms",
        "fast orbit around objects with large rotations",
        "long complex handheld walkthrough with loop closures",
        "static tripod: pan, tilt and zoom",
        "short dolly and truck moves in a large hall",
        "walk along paths, look around",
    ],
)
def test_every_task_gives_valid_prompts(task):
    cues = parse_task(task)
    for s in write_prompts(task, 8, seed=0):
        assert check_prompt(s.prompt, cues, s.seed) is not None, s.prompt


def test_loop_closure_prompts_return_to_their_start():
    for s in write_prompts("indoor rooms with loop closures", 12, seed=1):
        prog = parse_prompt(s.prompt)
        t = prog.trajectory(np.array(_level()), np.eye(3), 1, 1, seed=s.seed)
        c = t.c2w[:, :3, 3]
        assert np.linalg.norm(c[-1] - c[0]) < 0.05, s.prompt
        assert np.linalg.norm(c - c[0], axis=1).max() > 0.3, s.prompt  # it did go somewhere
        cos = np.clip((np.trace(t.c2w[0, :3, :3].T @ t.c2w[-1, :3, :3]) - 1) / 2, -1, 1)
        assert np.degrees(np.arccos(cos)) < 5.0, s.prompt  # and looks the way it started
    # the look-around in out-and-back loops is a real turn (20-70 degrees, written in full)
    pans = [seg for s in write_prompts("loop closures", 24, seed=0) for seg in parse_prompt(s.prompt).segments if isinstance(seg, Pan)]
    assert pans and all(20 <= abs(p.angle) <= 70 for p in pans)
    # without the cue most prompts end away from the start
    ends = [np.linalg.norm(parse_prompt(s.prompt).extent(s.seed)[-1]) for s in write_prompts("indoor rooms", 12, seed=1)]
    assert np.median(ends) > 0.3


def _level():
    from vibe3r.geometry import look_at

    return look_at(torch.tensor([0.0, 0.0, 1.5]), torch.tensor([1.0, 0.0, 1.5])).numpy()


def test_slow_prompts_move_less_per_frame_than_fast_ones():
    slow = write_prompts("slow camera motion in indoor rooms", 16, seed=2)
    fast = write_prompts("fast camera motion in indoor rooms", 16, seed=2)
    s = np.median([per_frame_step(p.prompt, p.seed) for p in slow])
    f = np.median([per_frame_step(p.prompt, p.seed) for p in fast])
    assert s * 2.5 < f, (s, f)


def test_cues_shift_the_segment_mix_and_magnitudes():
    def segs(task):
        return [seg for p in write_prompts(task, 16, seed=5) for seg in parse_prompt(p.prompt).segments]

    orbit = segs("orbit around the objects")
    assert sum(isinstance(x, Orbit) for x in orbit) > 0.5 * len(orbit)
    hand = segs("handheld phone video")
    assert sum(isinstance(x, HandheldWalk) for x in hand) > 0.4 * len(hand)
    static = segs("static tripod shots")
    assert all(not hasattr(x, "distance") and not isinstance(x, Orbit) for x in static)

    def max_pan(task):
        return max(abs(x.angle) for x in segs(task) if isinstance(x, Pan))

    assert max_pan("pan around, small rotations") < 0.5 * max_pan("pan around, large rotations")


@pytest.mark.parametrize(
    ("prompt", "ok"),
    [
        ("dolly forward 1 frames 20", True),
        ("zoom 1.5", True),
        ("pan left 10", True),
        ("spin 90", False),  # does not parse
        ("dolly forward 5", False),  # leaves a room
        ("pedestal up 1.5", False),  # through the ceiling
        ("dolly forward 1 frames 400", False),  # over the frame budget
        ("dolly forward 1 frames 10 look_at 0.5 0 0", False),  # passes through its look_at target
        ("still frames 20", False),  # nothing happens
        ("pan right 0.5 then dolly forward 0.01", False),  # next to nothing happens
    ],
)
def test_check_prompt_keeps_usable_prompts_only(prompt, ok):
    assert (check_prompt(prompt, parse_task("indoor rooms")) is not None) == ok
    if prompt == "dolly forward 5":  # a large hall allows more
        assert check_prompt(prompt, parse_task("a large hall")) is not None


def test_task_cues():
    c = parse_task("Indoor rooms, SLOW handheld motion, small rotations, loop closures")
    assert (c.speed, c.rotation, c.scale, c.loop, c.static) == (0.45, 0.35, 1.0, True, False)
    assert c.weights["handheld"] > 3 * c.weights["orbit"]
    c = parse_task("fast tripod pans in a large hall")
    assert (c.speed, c.static, c.scale) == (2.0, True, 1.8) and c.weights["dolly"] == 0.0
    assert parse_task("indoor rooms").weights == parse_task("ROOMS").weights


def test_bad_writer_arguments_raise_input_errors(tmp_path):
    with pytest.raises(InputError, match=">= 1"):
        write_prompts("indoor rooms", 0, seed=0)
    with pytest.raises(InputError, match="not found"):
        write_prompts("indoor rooms", 2, seed=0, lm_path=str(tmp_path / "nope"))
    with pytest.raises(InputError, match="cannot load"):
        write_prompts("indoor rooms", 2, seed=0, lm_path=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# LM mode with a tiny model built here
# ---------------------------------------------------------------------------------------------

CORPUS = [
    "pan left 30 frames 12",
    "dolly forward 1 frames 20",
    "orbit left 90 radius 1 frames 40",
    "pan right 20 frames 10 then dolly backward 0.5 frames 12",
    "truck left 0.5 frames 12 then pan right 30 frames 12",
    "tilt up 10 frames 8 then still frames 6",
]




def _tiny_lm(path, train_steps: int) -> None:
    """Save a word-level tokenizer and a 1-layer GPT-2 to ``path``, optionally overfit on CORPUS."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = sorted({w for line in CORPUS for w in line.split()} | {"prompt:"})
    vocab = {w: i for i, w in enumerate(["[UNK]", "[EOS]", "[PAD]", "\n", *words])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"[ \t]+"), "removed"), pre_tokenizers.Split("\n", "isolated")]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", eos_token="[EOS]", pad_token="[PAD]")
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=len(vocab), n_positions=512, eos_token_id=1, bos_token_id=1)
    model = GPT2LMHeadModel(cfg)
    if train_steps:
        text = "\n".join(f"prompt: {line}" for line in CORPUS * 3)
        ids = torch.tensor([tok(text).input_ids])
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(train_steps):
            loss = model(input_ids=ids, labels=ids).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.save_pretrained(path)
    tok.save_pretrained(path)


def test_few_shot_text_shows_task_grammar_and_examples():
    text = few_shot_text("slow pans", ["pan left 10", "dolly forward 1"])
    assert text.startswith("Camera motion prompts for: slow pans\n") and "walk path" in text
    assert text.endswith("prompt: pan left 10\nprompt: dolly forward 1\nprompt:")


def test_lm_mode_keeps_parsing_lines_from_a_trained_tiny_model(tmp_path, caplog):
    _tiny_lm(tmp_path, train_steps=40)
    with caplog.at_level(logging.INFO, logger="vibe3r.video_gen.prompts"):
        specs = write_prompts("indoor rooms", 6, seed=0, lm_path=str(tmp_path))
    again = write_prompts("indoor rooms", 6, seed=0, lm_path=str(tmp_path))
    assert specs == again  # seeded sampling
    lm = [s for s in specs if s.source == "lm"]
    assert len(specs) == 6 and len(lm) >= 2
    assert all(parse_prompt(s.prompt) for s in specs)
    assert any(f"{len(lm)} of 6 prompts from the LM" in r.getMessage() for r in caplog.records)


def test_lm_mode_falls_back_to_templates_with_an_untrained_model(tmp_path):
    _tiny_lm(tmp_path, train_steps=0)
    specs = write_prompts("indoor rooms", 5, seed=0, lm_path=str(tmp_path), lm_rounds=1, max_new_tokens=16)
    assert len(specs) == 5
    assert all(parse_prompt(s.prompt) for s in specs)
    n_lm = sum(s.source == "lm" for s in specs)
    templates = [s for s in specs if s.source == "template"]
    assert len(templates) == 5 - n_lm >= 3
    # the fill-up continues the template sequence at the next indices
    plain = write_prompts("indoor rooms", 5, seed=0)
    assert [s.prompt for s in templates] == [s.prompt for s in plain[n_lm:]]
