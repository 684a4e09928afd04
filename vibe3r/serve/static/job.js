// The job page: poll the job, show progress per phase, then the 3D viewer and the downloads, or the error.
"use strict";
const jobId = window.location.pathname.split("/").filter(Boolean).pop();
const PHASES = ["decode", "model", "graph", "inference", "poses", "align", "export", "package"];
const LABELS = { "scene.glb": "GLB scene (points + cameras)", "scene.ply": "point cloud (PLY)", "mesh.ply": "mesh (PLY)",
  "colmap.zip": "COLMAP model (zip)", "nerfstudio.zip": "nerfstudio (zip)", "cameras.json": "cameras (JSON)", "report.json": "report (JSON)" };
let viewer = null;

function showPhases(job) {
  const box = document.getElementById("phases");
  box.replaceChildren();
  const prog = job.progress || {};
  for (const p of PHASES) {
    if (!(p in prog)) continue;
    const [d, t] = prog[p];
    const bar = el("progress"); bar.max = Math.max(t, 1); bar.value = d;
    box.append(el("span", p), bar, el("span", `${d}/${t}`, "hint"));
  }
}

function showResult(job) {
  document.getElementById("result").hidden = false;
  const r = job.result || {};
  document.getElementById("summary").textContent =
    `${r.frames} frames, ${r.pairs} pairs, ${r.points} points, ${r.mesh_triangles} mesh triangles, ${(r.seconds || 0).toFixed(1)} s` +
    (job.contribute ? (job.pooled ? " · added to the loop's capture pool" : "") : "");
  const dl = document.getElementById("downloads");
  dl.replaceChildren();
  for (const [name, url] of Object.entries(job.files)) {
    const a = el("a", LABELS[name] || name); a.href = url; a.setAttribute("download", ""); a.dataset.file = name; dl.append(a);
  }
  if (!viewer && job.files["scene.glb"]) {
    viewer = new GlbViewer(document.getElementById("viewer"));
    viewer.load(job.files["scene.glb"]).catch(e => { document.getElementById("error").textContent = "the 3D view could not load: " + e.message; });
    document.getElementById("psize").addEventListener("input", e => viewer.setPointSize(+e.target.value));
    document.getElementById("showcams").addEventListener("change", e => viewer.showMeshes(e.target.checked));
  }
}

async function poll() {
  let job;
  try { job = await getJSON(`/api/jobs/${jobId}`); }
  catch (e) {
    document.getElementById("error").textContent = e.message;
    if (e.message !== "no such job") setTimeout(poll, 3000);  // the server may be restarting: keep asking
    return;
  }
  document.getElementById("name").textContent = job.display_name;
  const st = document.getElementById("state"); st.textContent = stateText(job); st.className = "state-" + job.state;
  document.getElementById("when").textContent = "submitted " + fmtTime(job.created);
  document.getElementById("overall").value = job.fraction;
  showPhases(job);
  document.getElementById("error").textContent = job.error || "";
  if (job.state === "done") { showResult(job); return; }
  if (job.state === "failed") return;
  setTimeout(poll, 1000);
}
poll();
