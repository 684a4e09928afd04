// The evaluator page: ask the server for the next comparison this evaluator has not judged, show both sides
// (rendered views + a 3D viewer each), send the verdict, go on. The sides are A and B only: which round made
// which is never sent to the page.
"use strict";
const $ = (id) => document.getElementById(id);
let current = null, busy = false, fixedName = false;

function annotator() { return $("annotator").value.trim(); }

async function showViewer(canvasId, url) {
  const old = $(canvasId), fresh = old.cloneNode(false);  // a new canvas: a fresh WebGL context and controls
  old.replaceWith(fresh);
  const v = new GlbViewer(fresh);
  await v.load(url);
}

function show(item) {
  current = item;
  $("item").hidden = false;
  $("capture").textContent = item.capture;
  $("frames").textContent = `${item.frames} frames · comparison ${item.id}`;
  $("input").src = item.input;
  for (const s of ["a", "b"]) {
    $(`${s}-view0`).src = item[s].views[0];
    $(`${s}-view1`).src = item[s].views[1];
  }
  $("item").dataset.id = item.id;
  Promise.all([showViewer("viewer-a", item.a.glb), showViewer("viewer-b", item.b.glb)])
    .then(() => { $("item").dataset.ready = "1"; })
    .catch((e) => { $("error").textContent = "the 3D view could not load: " + e.message; });
}

function showProgress(p) {
  const parts = [`${p.judged} of ${p.comparisons} comparisons judged by you`];
  if (p.building) parts.push("more are being prepared");
  $("progress").textContent = parts.join(" · ");
  if (p.builder_error) $("error").textContent = p.builder_error;
}

async function next() {
  const name = annotator();
  if (!name && !fixedName) {
    $("status").textContent = "Enter your name to start.";
    return;
  }
  let r;
  try { r = await getJSON("/api/evaluate/next?annotator=" + encodeURIComponent(name)); }
  catch (e) { $("error").textContent = e.message; return; }
  if (r.fixed_annotator) { fixedName = true; $("annotator").value = r.annotator; $("annotator").disabled = true; }
  showProgress(r.progress);
  if (r.item) {
    $("status").textContent = "";
    $("item").dataset.ready = "0";
    show(r.item);
    return;
  }
  current = null;
  $("item").hidden = true;
  if (r.progress.building) {
    $("status").textContent = "Preparing comparisons (reconstructing the captures with each round's model)…";
    setTimeout(next, 2000);
  } else {
    $("status").textContent = r.progress.comparisons
      ? `All ${r.progress.comparisons} comparisons judged. Thank you!` : "This run has no comparisons yet (it needs two rounds, or a round and the base checkpoint).";
  }
}

async function vote(verdict) {
  if (!current || busy) return;
  busy = true;
  document.querySelectorAll(".verdicts button").forEach((b) => { b.disabled = true; });
  try {
    const res = await fetch(`/api/evaluate/${current.id}`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ verdict, annotator: annotator() }),
    });
    const body = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
    if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
    $("error").textContent = "";
    $("status").textContent = `Recorded: ${verdict === "tie" ? "tie" : verdict.toUpperCase() + " better"} (comparison ${body.comparison}).`;
    document.body.dataset.lastJudgement = body.judgement;
  } catch (e) {
    $("error").textContent = e.message;
  } finally {
    busy = false;
    document.querySelectorAll(".verdicts button").forEach((b) => { b.disabled = false; });
  }
  await next();
}

document.querySelectorAll(".verdicts button").forEach((b) => b.addEventListener("click", () => vote(b.dataset.verdict)));
document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT") return;
  const v = { a: "a", b: "b", t: "tie" }[e.key];
  if (v) vote(v);
});
$("annotator").value = localStorage.getItem("vibe3r-evaluator") || "";
$("annotator").addEventListener("change", () => { localStorage.setItem("vibe3r-evaluator", annotator()); next(); });
next();
