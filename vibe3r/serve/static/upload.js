// The upload page: send the form with progress, show the server's one-line refusal, list this client's jobs.
"use strict";
const form = document.getElementById("upload"), errorBox = document.getElementById("error"), sending = document.getElementById("sending");

let limits = null;
getJSON("/api/config").then(c => {
  limits = c;
  document.getElementById("limits").textContent = `Up to ${c.max_upload_mb} MB, ${Math.round(c.max_duration_s / 60)} min of video, ${c.jobs_per_client} jobs at a time.`;
}).catch(() => {});

form.addEventListener("submit", ev => {
  ev.preventDefault();
  errorBox.textContent = "";
  const files = document.getElementById("file").files;
  if (!files.length) { errorBox.textContent = "Choose a video or some photos first."; return; }
  let total = 0; for (const f of files) total += f.size;
  if (limits && total > limits.max_upload_mb * 1048576) {  // the server refuses it too, before reading it
    errorBox.textContent = `the upload is larger than the limit of ${limits.max_upload_mb} MB`; return;
  }
  const data = new FormData();
  for (const f of files) data.append("file", f);
  if (document.getElementById("contribute").checked) data.append("contribute", "1");
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/jobs");
  xhr.upload.onprogress = e => { if (e.lengthComputable) sending.value = e.loaded / e.total; };
  xhr.onload = () => {
    sending.hidden = true; document.getElementById("submit").disabled = false;
    let body = {}; try { body = JSON.parse(xhr.responseText); } catch (e) { body = { error: `HTTP ${xhr.status}` }; }
    if (xhr.status === 201) { window.location.href = body.url; return; }
    errorBox.textContent = body.error || `upload failed (HTTP ${xhr.status})`;
    refresh();
  };
  xhr.onerror = () => { sending.hidden = true; document.getElementById("submit").disabled = false; errorBox.textContent = "the upload did not reach the server"; };
  sending.hidden = false; sending.value = 0; document.getElementById("submit").disabled = true;
  xhr.send(data);
});

async function refresh() {
  let jobs;
  try { jobs = (await getJSON("/api/jobs")).jobs; } catch (e) { return; }
  const body = document.getElementById("jobs");
  body.replaceChildren();
  document.getElementById("nojobs").hidden = jobs.length > 0;
  for (const j of jobs) {
    const tr = el("tr");
    tr.append(el("td", fmtTime(j.created)));
    const a = el("a", j.display_name); a.href = j.url; const td = el("td"); td.append(a); tr.append(td);
    const st = el("td", stateText(j), "state-" + j.state); if (j.error) st.title = j.error; tr.append(st);
    const p = el("progress"); p.max = 1; p.value = j.fraction; const tp = el("td"); tp.append(p); tr.append(tp);
    body.append(tr);
  }
}
refresh();
setInterval(refresh, 2000);
