// deblur demo page: pick a photo and a model, queue it (POST /api/jobs), show its progress,
// compare before and after with a slider.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, limits: null, beforeUrl: null, afterUrl: null, done: false, job: null };

const megabytes = (n) => `${(n / 2 ** 20).toFixed(0)} MB`;

// A server started with a token prints its address as .../#token=...: keep the token for
// this tab (the fragment never reaches the server or its logs), drop it from the address
// bar, and send it with every API call.
const TOKEN_KEY = "deblur-token";
const given = /(?:^#|&)token=([^&]+)/.exec(location.hash);
if (given) {
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(given[1]));
  history.replaceState(null, "", location.pathname + location.search);
}

function api(url, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  return fetch(url, { ...options, headers });
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// FastAPI says {"detail": "..."} for our errors and {"detail": [{msg}, ...]} for a malformed form.
async function errorText(res) {
  try {
    const body = await res.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
  } catch (_) { /* not JSON: fall through */ }
  return `the server answered ${res.status} ${res.statusText}`;
}

function loadImage(img, url) {
  return new Promise((resolve, reject) => {
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot display this image"));
    img.src = url;
  });
}

function replaceUrl(key, blob) {
  if (state[key]) URL.revokeObjectURL(state[key]);
  state[key] = blob ? URL.createObjectURL(blob) : null;
  return state[key];
}

async function loadModels() {
  const res = await api("/api/models");
  if (!res.ok) throw new Error(await errorText(res));
  const info = await res.json();
  state.limits = info.limits;
  $("limits").textContent =
    `${info.limits.types} · up to ${megabytes(info.limits.bytes)}, ${info.limits.pixels / 1e6} MP`;
  const box = $("models");
  box.replaceChildren();
  let picked = false;
  for (const m of info.models) {
    const label = document.createElement("label");
    label.className = m.available ? "model" : "model off";
    const input = Object.assign(document.createElement("input"), {
      type: "radio", name: "model", value: m.kind, disabled: !m.available,
    });
    if (m.available && !picked) picked = input.checked = true;
    input.addEventListener("change", () => state.done && deblur());
    const title = Object.assign(document.createElement("strong"), { textContent: m.label });
    const source = Object.assign(document.createElement("small"), { textContent: m.source });
    source.title = m.source;
    label.append(input, title, source);
    box.append(label);
  }
}

// Show the upload at once; formats the browser cannot draw (TIFF) come back from the server as PNG.
async function showBefore(file) {
  const before = $("before");
  try {
    await loadImage(before, replaceUrl("beforeUrl", file));
  } catch (_) {
    const form = new FormData();
    form.append("file", file);
    const res = await api("/api/png", { method: "POST", body: form });
    if (!res.ok) throw new Error(await errorText(res));
    await loadImage(before, replaceUrl("beforeUrl", await res.blob()));
  }
  const { naturalWidth: w, naturalHeight: h } = before;
  $("compare").style.setProperty("--fit", `calc(70vh * ${w / h})`);
  await loadImage($("after"), state.beforeUrl);
  return [w, h];
}

// Before a result there is nothing to compare: the photo alone, no divider.
function setPreview(on) {
  const was = $("slider").hidden;
  for (const el of document.querySelectorAll(".divider, .tag, #slider")) el.hidden = on;
  if (on) setSlider(100);
  else if (was) setSlider(50); // a re-run with another model keeps the user's position
}

function setSlider(value) {
  $("slider").value = value;
  $("compare").style.setProperty("--pos", `${value}%`);
}

async function choose(file) {
  showError("");
  cancelJob(); // a new photo gives up the old one's job
  state.done = false;
  $("download").hidden = true;
  $("meta").textContent = "";
  if (!file) return;
  if (state.limits && file.size > state.limits.bytes) {
    showError(`${file.name} is larger than the ${megabytes(state.limits.bytes)} upload limit`);
    return;
  }
  state.file = file;
  $("drop-title").textContent = file.name;
  $("run").disabled = !document.querySelector("input[name=model]:checked");
  $("empty").hidden = true;
  $("compare").hidden = false;
  setPreview(true);
  try {
    const [w, h] = await showBefore(file);
    $("meta").textContent = `${file.name} · ${w}×${h} px`;
  } catch (err) {
    $("compare").hidden = true;
    $("empty").hidden = false;
    showError(err.message);
  }
}

const POLL_MS = 300;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Where the job stands: its place in the queue, then tiles done of total, and the ETA.
function showProgress(job) {
  const bar = $("progress");
  if (job.state === "queued") {
    $("progress-text").textContent = job.position === 1
      ? "Waiting · next in line" : `Waiting · ${job.position} jobs ahead of you`;
    bar.removeAttribute("value"); // indeterminate until it starts
  } else {
    const { done, total } = job.tiles;
    $("progress-text").textContent = total > 1
      ? `Deblurring · tile ${done} of ${total}` : "Deblurring…";
    bar.max = Math.max(total, 1);
    bar.value = done;
  }
  $("progress-eta").textContent = job.eta_s > 0 ? `about ${Math.ceil(job.eta_s)} s left` : "";
}

async function cancelJob() {
  const id = state.job;
  state.job = null;
  if (id) await api(`/api/jobs/${id}`, { method: "DELETE", keepalive: true }).catch(() => {});
}

// Queue the photo with POST /api/jobs, poll it until it ends, then fetch the PNG.
async function runJob(form) {
  const res = await api("/api/jobs", { method: "POST", body: form });
  if (!res.ok) throw new Error(await errorText(res)); // a full queue says when to retry
  let job = await res.json();
  state.job = job.id;
  while (job.state === "queued" || job.state === "running") {
    showProgress(job);
    await sleep(POLL_MS);
    if (state.job !== job.id) return null; // cancelled meanwhile
    const poll = await api(`/api/jobs/${job.id}`);
    if (!poll.ok) throw new Error(await errorText(poll));
    job = await poll.json();
  }
  showProgress(job);
  state.job = null;
  if (job.state !== "done") throw new Error(job.error || `the job was ${job.state}`);
  const out = await api(job.result);
  if (!out.ok) throw new Error(await errorText(out));
  return { res: out, job };
}

async function deblur() {
  const model = document.querySelector("input[name=model]:checked");
  if (!state.file || !model) return;
  showError("");
  await cancelJob();
  $("progress-text").textContent = "Uploading…";
  $("progress-eta").textContent = "";
  $("progress").removeAttribute("value");
  $("busy").hidden = false;
  $("run").disabled = true;
  const form = new FormData();
  form.append("file", state.file);
  form.append("model", model.value);
  try {
    const got = await runJob(form);
    if (!got) return;
    const { res, job } = got;
    const url = replaceUrl("afterUrl", await res.blob());
    const after = await loadImage($("after"), url);
    const name = /filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") || "");
    Object.assign($("download"), { href: url, download: name ? name[1] : "deblurred.png" });
    $("download").hidden = false;
    $("tag-after").textContent = `Deblurred · ${model.parentElement.querySelector("strong").textContent}`;
    $("meta").textContent = [
      `${after.naturalWidth}×${after.naturalHeight} px`,
      res.headers.get("X-Deblur-Model"),
      `${job.ms} ms`,
    ].join(" · ");
    setPreview(false);
    state.done = true;
  } catch (err) {
    showError(err.message);
  } finally {
    $("busy").hidden = true;
    $("run").disabled = false;
  }
}

function wire() {
  $("file").addEventListener("change", (e) => choose(e.target.files[0]));
  $("run").addEventListener("click", deblur);
  $("cancel").addEventListener("click", async () => {
    await cancelJob();
    $("busy").hidden = true;
    $("run").disabled = false;
  });
  // Leaving the page gives the job up: the server drops it instead of running it.
  window.addEventListener("pagehide", () => { cancelJob(); });
  $("slider").addEventListener("input", (e) => setSlider(e.target.value));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    choose(e.dataTransfer.files[0]);
  });
}

wire();
loadModels().catch((err) => showError(`cannot list the models: ${err.message}`));
