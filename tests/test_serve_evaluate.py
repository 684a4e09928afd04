"""The evaluator: comparisons built from a loop run's rounds (reconstructed once, cached), served one at a
time to each evaluator, verdicts stored as human judgements with who and when; bad input gets a clear
status and message; ``loop compare`` reports the win rate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _evalrun import tiny_run
from _serve import running_server
from PIL import Image

from vibe3r.loop.compare import collect
from vibe3r.preference.store import PreferenceStore
from vibe3r.serve.client import Client
from vibe3r.serve.config import ServeConfig
from vibe3r.serve.evaluator import EvalSettings, build, look_at, round_checkpoints, splat


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    run = tiny_run(root)
    s = EvalSettings(run=run, frames=4, size=64, iters=10)
    counts = build(s)
    return run, s, counts


def test_build_reconstructs_each_round_once_and_pairs_consecutive_rounds(built):
    run, s, counts = built
    assert sorted(round_checkpoints(run)) == [0, 1, 2]
    assert counts == {"rounds": 3, "captures": 1, "built": 3, "cached": 0, "comparisons": 2, "failed": 0}
    assert build(s)["cached"] == 3  # a second build reuses the cache and adds no comparison
    with PreferenceStore(run / "preferences.sqlite") as st:
        comps = st.comparisons()
    assert len(comps) == 2 and sorted(sorted((a.round, b.round)) for _, a, b in comps) == [[0, 1], [1, 2]]
    for _, a, b in comps:
        assert a.frames == b.frames and len(a.frames) == 4
        for rec in (a, b):
            d = run / rec.path
            assert (d / "scene.glb").read_bytes()[:4] == b"glTF"
            v = np.asarray(Image.open(d / "view0.png"))
            assert v.shape == (240, 320, 3) and (np.abs(v.astype(int) - (32, 36, 44)).sum(-1) > 24).mean() > 0.01


def test_splat_draws_the_nearer_point_over_the_farther():
    K = np.array([[10.0, 0, 5], [0, 10, 5], [0, 0, 1]])
    c2w = look_at(np.zeros(3), np.array([0, 0, 1.0]), np.array([0, 1.0, 0]))
    assert np.allclose(c2w, np.eye(4))
    P = np.array([[0, 0, 2.0], [0, 0, 1.0], [0, 0, -1.0]])
    C = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    img = splat(P, C, K, c2w, (11, 11), radius=0)
    assert tuple(img[5, 5]) == (0, 255, 0) and (img[..., 2] == 255).sum() == 0  # behind the camera: not drawn


def test_api_serves_the_next_item_records_judgements_and_refuses_bad_input(tmp_path, built):
    run, s, _ = built
    cfg = ServeConfig(data=tmp_path / "data", evaluate=s)
    with running_server(cfg, start_worker=False) as (url, app):
        c = Client(url)
        st, body = c.json("/api/evaluate/next?annotator=ann")
        assert st == 200 and body["progress"]["comparisons"] == 2 and body["progress"]["judged"] == 0
        item = body["item"]
        assert set(item) == {"id", "capture", "frames", "input", "a", "b"} and "round" not in json.dumps(item)  # blind
        for url_ in (item["input"], item["a"]["glb"], *item["b"]["views"]):
            code, data = c.request("GET", url_)
            assert code == 200 and len(data) > 100

        def post(cid, payload):
            code, data = c.request("POST", f"/api/evaluate/{cid}", json.dumps(payload).encode(), {"Content-Type": "application/json"})
            return code, json.loads(data)

        code, out = post(item["id"], {"verdict": "a", "annotator": "ann"})
        assert code == 201 and out["annotator"] == "ann"
        assert post(item["id"], {"verdict": "b", "annotator": "ann"}) == (409, {"error": f"ann already judged comparison {item['id']}; "
                                                                                       "each evaluator judges a comparison once"})
        assert post(999, {"verdict": "a", "annotator": "ann"})[0] == 404
        assert post("x1", {"verdict": "a", "annotator": "ann"})[0] == 404
        code, out = post(item["id"], {"verdict": "A better", "annotator": "bob"})
        assert code == 400 and "unknown verdict" in out["error"]
        code, out = post(item["id"], {"verdict": "a"})
        assert code == 400 and "your name" in out["error"]
        assert c.request("GET", "/api/evaluate/files/1/../../registry.sqlite")[0] == 404
        assert c.request("GET", "/api/evaluate/files/1/report.json")[0] == 404

        second = c.json("/api/evaluate/next?annotator=ann")[1]["item"]
        assert second["id"] != item["id"]
        assert post(second["id"], {"verdict": "tie", "annotator": "ann"})[0] == 201
        done = c.json("/api/evaluate/next?annotator=ann")[1]
        assert done["item"] is None and done["progress"]["judged"] == 2
        assert c.json("/api/evaluate/next?annotator=bob")[1]["item"]["id"] == item["id"]  # bob has his own queue
        code, page = c.request("GET", "/evaluate")
        assert code == 200 and b"evaluate.js" in page
    with PreferenceStore(run / "preferences.sqlite") as st:
        js = st.judgements(annotator="ann")
    assert [(j.annotator, j.verdict, j.source) for j in js] == [("ann", "a", "human"), ("ann", "tie", "human")]
    # loop compare: each round against the previous one from these judgements
    rounds = {r["round"]: r["human_vs_previous"] for r in collect(run)["rounds"]}  # (only ann has judged so far)
    first = next(j for j in js if j.verdict == "a")
    winner = first.a.round
    r = max(first.a.round, first.b.round)
    assert rounds[r]["n"] == 1 and rounds[r]["win_rate"] == (1.0 if winner == r else 0.0)
    other = 3 - r  # the round of the tie
    assert rounds[other]["ties"] == 1 and rounds[other]["win_rate"] == 0.5


def test_without_a_run_the_evaluator_says_how_to_get_one(tmp_path):
    with running_server(ServeConfig(data=tmp_path / "data"), start_worker=False) as (url, app):
        code, body = Client(url).json("/api/evaluate/next?annotator=ann")
    assert code == 404 and "--run" in body["error"]


def test_under_auth_the_evaluator_is_the_user(tmp_path, built):
    run, s, _ = built
    cfg = ServeConfig(data=tmp_path / "data", evaluate=s, auth="eve:secret")
    with running_server(cfg, start_worker=False) as (url, app):
        c = Client(url, auth="eve:secret")
        body = c.json("/api/evaluate/next?annotator=someone-else")[1]
        assert body["annotator"] == "eve" and body["fixed_annotator"]
        code, data = c.request("POST", f"/api/evaluate/{body['item']['id']}", b'{"verdict": "b", "annotator": "mallory"}',
                               {"Content-Type": "application/json"})
        assert code == 201 and json.loads(data)["annotator"] == "eve"
        assert Client(url).json("/api/evaluate/next")[0] == 401
