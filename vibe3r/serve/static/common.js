// Shared helpers of the pages. Text from the server (file names, errors) only ever goes in through textContent.
"use strict";
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
function fmtTime(t) { return t ? new Date(t * 1000).toLocaleString() : ""; }
function stateText(job) {
  if (job.state === "queued") return job.queue_position ? `queued (${job.queue_position} ahead)` : "queued";
  if (job.state === "running") return `running: ${job.phase || "starting"}`;
  return job.state;
}
async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}
