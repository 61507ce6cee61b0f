// ferkit's page: photos -> POST /v1/analyze -> boxes, labels and score bars; live camera frames -> an overlay.
// Plain JS, no build step and no CDN: the server hands out these three files and nothing else.
"use strict";

const COLORS = {
  angry: "#d64545", disgust: "#2f9e44", fear: "#7048e8", happy: "#f08c00", sad: "#1c7ed6",
  surprise: "#0ca678", neutral: "#868e96", contempt: "#a0522d",
};
const GROUPS = ["positive", "neutral", "negative"];
const $ = (sel, root = document) => root.querySelector(sel);
const state = { key: localStorage.getItem("ferkit-key") || "", models: [], results: [] };

function colorOf(emotion) { return COLORS[emotion] || "#e64980"; }
function pct(x) { return `${Math.round(x * 100)}%`; }
function modelParam() { return $("#model").value ? `model=${encodeURIComponent($("#model").value)}` : ""; }

function setStatus(el, text, isError = false) {
  el.textContent = text;
  el.classList.toggle("error", isError);
}

// One fetch wrapper: the key header when there is one, the server's one-line message on errors.
async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.key) headers["X-API-Key"] = state.key;
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON: reported below */ }
  if (response.status === 401) $("#key-form").hidden = false;
  if (!response.ok) {
    const error = new Error((body && body.message) || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

async function loadModels() {
  try {
    state.models = await api("/v1/models");
  } catch (error) {
    setStatus($("#status"), error.message, true);
    return;
  }
  $("#key-form").hidden = true;
  const select = $("#model");
  select.replaceChildren(...state.models.map((m) => new Option(m.name, m.name, m.default, m.default)));
  showModelInfo();
}

function showModelInfo() {
  const m = state.models.find((x) => x.name === $("#model").value);
  $("#model-info").textContent = m ? `${m.labels.length} emotions` +
    (m.accuracy ? `, ${pct(m.accuracy)} on FER2013 test` : "") + ` · detector ${m.detector}` : "";
}

// ---- photos ------------------------------------------------------------------------------------------------

function drawFaces(ctx, faces, scale = 1, withIds = false) {
  const side = Math.max(ctx.canvas.width, ctx.canvas.height);  // the canvas is shown about 350-700 px wide
  const lw = Math.max(2, Math.round(side / 200));
  const fontSize = Math.max(12, Math.round(side / 36));
  ctx.font = `600 ${fontSize}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  faces.forEach((face, i) => {
    const [x, y, w, h] = face.box.map((v) => v * scale);
    const color = colorOf(face.emotion);
    ctx.lineWidth = lw;
    ctx.strokeStyle = color;
    ctx.strokeRect(x, y, w, h);
    const label = `${withIds ? `#${face.id}` : i + 1} ${face.emotion} ${pct(face.confidence)}`;
    const tw = ctx.measureText(label).width + 8;
    const ty = y - fontSize - 6 >= 0 ? y - fontSize - 6 : y + h;
    ctx.fillStyle = color;
    ctx.fillRect(x - lw / 2, ty, tw, fontSize + 6);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x + 4 - lw / 2, ty + 3);
  });
}

function scoreBars(face) {
  const list = document.createElement("ul");
  list.className = "scores";
  Object.entries(face.scores).sort((a, b) => b[1] - a[1]).forEach(([emotion, p]) => {
    const li = document.createElement("li");
    li.className = "score";
    const name = document.createElement("span");
    name.textContent = emotion;
    const track = document.createElement("span");
    track.className = "track";
    track.setAttribute("role", "meter");
    track.setAttribute("aria-label", emotion);
    track.setAttribute("aria-valuemin", "0");
    track.setAttribute("aria-valuemax", "100");
    track.setAttribute("aria-valuenow", String(Math.round(p * 100)));
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${(p * 100).toFixed(1)}%`;
    fill.style.background = colorOf(emotion);
    fill.style.display = "block";
    track.append(fill);
    const value = document.createElement("span");
    value.className = "pct";
    value.textContent = pct(p);
    li.append(name, track, value);
    list.append(li);
  });
  return list;
}

function loadImage(file) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot show this file"));
    img.src = URL.createObjectURL(file);
  });
}

async function renderResult(file, result) {
  const node = newResultNode();
  node.dataset.source = result.source;
  node.dataset.faces = String(result.faces.length);
  $(".name", node).textContent = result.source;
  const n = result.faces.length;
  const summary = n === 0 ? "No face found" : `${n} face${n > 1 ? "s" : ""}: ` +
    result.faces.map((f, i) => `${i + 1} ${f.emotion} (${f.group})`).join(", ");
  $(".summary", node).textContent = `${summary} · ${result.width}×${result.height} · model ${result.model}`;
  const canvas = $(".picture", node);
  canvas.width = result.width;
  canvas.height = result.height;
  canvas.setAttribute("aria-label", `${result.source}: ${summary}`);
  const ctx = canvas.getContext("2d");
  try {
    const img = await loadImage(file);
    ctx.drawImage(img, 0, 0, result.width, result.height);  // the browser applies EXIF orientation, as the server did
    URL.revokeObjectURL(img.src);
  } catch (_) {
    ctx.fillStyle = "#444";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }
  drawFaces(ctx, result.faces);
  const faces = $(".faces", node);
  result.faces.forEach((face, i) => {
    const li = document.createElement("li");
    li.className = "face";
    li.dataset.emotion = face.emotion;
    const title = document.createElement("strong");
    title.textContent = `Face ${i + 1}: ${face.emotion} ${pct(face.confidence)} (${face.group})`;
    li.append(title, scoreBars(face));
    faces.append(li);
  });
  $("#results").prepend(node);
}

// importNode, not cloneNode: a clone of template content stays in the template's inert document, where a canvas
// cannot resolve fonts.
function newResultNode() {
  return document.importNode($("#result-template").content, true).firstElementChild;
}

function renderFailure(file, message) {
  const node = newResultNode();
  node.classList.add("failed");
  node.dataset.source = file.name;
  $(".name", node).textContent = file.name;
  $(".summary", node).textContent = message;
  $(".picture", node).remove();
  $("#results").prepend(node);
}

async function analyzeFiles(files) {
  const images = [...files];
  const status = $("#status");
  let done = 0;
  let failed = 0;
  for (const file of images) {  // one at a time: the server batches concurrent users, not one page's queue
    setStatus(status, `Analyzing ${file.name} (${done + 1} of ${images.length})…`);
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const result = await api(`/v1/analyze?${modelParam()}`, { method: "POST", body: form });
      state.results.push(result);
      await renderResult(file, result);
    } catch (error) {
      failed += 1;
      renderFailure(file, error.message);
    }
    done += 1;
  }
  const faces = state.results.reduce((n, r) => n + r.faces.length, 0);
  setStatus(status, `${state.results.length} photo(s), ${faces} face(s)` + (failed ? `; ${failed} failed` : ""),
            failed > 0);
  for (const id of ["#download-json", "#download-csv", "#clear"]) $(id).disabled = state.results.length === 0;
}

function download(name, type, text) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function csvCell(value) {
  const s = String(value);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

// The same columns as `ferkit analyze --csv`: one row per face, a column per emotion.
function toCsv(results) {
  const labels = [...new Set(results.flatMap((r) => r.faces.flatMap((f) => Object.keys(f.scores))))];
  const rows = [["source", "face", "x", "y", "w", "h", "emotion", "confidence", "group", ...labels]];
  for (const r of results) {
    r.faces.forEach((f, i) => rows.push([r.source, i, ...f.box, f.emotion, f.confidence, f.group,
                                         ...labels.map((l) => f.scores[l] ?? "")]));
  }
  return rows.map((row) => row.map(csvCell).join(",")).join("\n") + "\n";
}

// ---- live camera -----------------------------------------------------------------------------------------------

const live = { stream: null, timer: null, busy: false, frames: 0, tracks: [], nextId: 1, started: 0 };

function iou(a, b) {
  const x1 = Math.max(a[0], b[0]), y1 = Math.max(a[1], b[1]);
  const x2 = Math.min(a[0] + a[2], b[0] + b[2]), y2 = Math.min(a[1] + a[3], b[1] + b[3]);
  const inter = Math.max(0, x2 - x1) * Math.max(0, y2 - y1);
  return inter / (a[2] * a[3] + b[2] * b[3] - inter || 1);
}

// Stable ids between frames: a face keeps the id of the previous frame's box it overlaps most (IoU > 0.3).
function assignIds(faces) {
  const taken = new Set();
  for (const face of faces) {
    let best = null, bestIou = 0.3;
    for (const t of live.tracks) {
      const o = iou(face.box, t.box);
      if (!taken.has(t.id) && o > bestIou) { best = t; bestIou = o; }
    }
    face.id = best ? best.id : live.nextId++;
    taken.add(face.id);
  }
  live.tracks = faces.map((f) => ({ id: f.id, box: f.box }));
}

function showShare(faces) {
  const counts = Object.fromEntries(GROUPS.map((g) => [g, 0]));
  faces.forEach((f) => { counts[f.group] = (counts[f.group] || 0) + 1; });
  for (const g of GROUPS) {
    const share = faces.length ? counts[g] / faces.length : 0;
    $(`#share-${g}`).textContent = pct(share);
    $(`#share-${g}-bar`).style.width = `${share * 100}%`;
  }
  $("#live-faces").replaceChildren(...faces.map((f) => {
    const li = document.createElement("li");
    li.textContent = `Person #${f.id}: ${f.emotion} ${pct(f.confidence)} (${f.group})`;
    return li;
  }));
}

async function sendFrame() {
  const video = $("#video");
  if (live.busy || !video.videoWidth) return;
  live.busy = true;
  const scale = Math.min(1, 640 / video.videoWidth);
  const grab = document.createElement("canvas");
  grab.width = Math.round(video.videoWidth * scale);
  grab.height = Math.round(video.videoHeight * scale);
  grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
  const t0 = performance.now();
  try {
    const blob = await new Promise((resolve) => grab.toBlob(resolve, "image/jpeg", 0.85));
    const result = await api(`/v1/analyze?filename=frame&${modelParam()}`,
                             { method: "POST", body: blob, headers: { "Content-Type": "image/jpeg" } });
    if (!live.stream) return;
    assignIds(result.faces);
    const overlay = $("#overlay");
    overlay.width = grab.width;
    overlay.height = grab.height;
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    drawFaces(ctx, result.faces, grab.width / result.width, true);
    overlay.dataset.faces = String(result.faces.length);
    showShare(result.faces);
    live.frames += 1;
    overlay.dataset.frames = String(live.frames);
    const fps = live.frames / ((performance.now() - live.started) / 1000);
    setStatus($("#live-status"), `${result.faces.length} face(s) · ${Math.round(performance.now() - t0)} ms per ` +
              `frame · ${fps.toFixed(1)} frames/s analysed`);
  } catch (error) {
    setStatus($("#live-status"), error.message, true);
  } finally {
    live.busy = false;
  }
}

async function startLive() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus($("#live-status"), "This browser gives no camera access here (it needs https or localhost).", true);
    return;
  }
  try {
    live.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 } }, audio: false });
  } catch (error) {
    setStatus($("#live-status"), `No camera: ${error.message}`, true);
    return;
  }
  const video = $("#video");
  video.srcObject = live.stream;
  await video.play();
  live.frames = 0;
  live.tracks = [];
  live.started = performance.now();
  live.timer = setInterval(sendFrame, 1000 / Number($("#live-fps").value));
  $("#live-start").disabled = true;
  $("#live-stop").disabled = false;
  setStatus($("#live-status"), "Camera on; analysing…");
}

function stopLive() {
  clearInterval(live.timer);
  if (live.stream) live.stream.getTracks().forEach((t) => t.stop());
  live.stream = null;
  $("#video").srcObject = null;
  const overlay = $("#overlay");
  overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
  $("#live-start").disabled = false;
  $("#live-stop").disabled = true;
  setStatus($("#live-status"), `Camera off after ${live.frames} analysed frames.`);
}

// ---- video jobs (only where the server has `ferkit video`) -------------------------------------------------------

function uploadWithProgress(url, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    if (state.key) xhr.setRequestHeader("X-API-Key", state.key);
    xhr.upload.onprogress = (event) => { if (event.lengthComputable) onProgress(event.loaded / event.total); };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* reported below */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new Error((body && body.message) || `HTTP ${xhr.status}`));
    };
    xhr.onerror = () => reject(new Error("the upload failed (connection lost)"));
    xhr.send(form);
  });
}

async function fetchBlob(path) {
  const response = await fetch(path, { headers: state.key ? { "X-API-Key": state.key } : {} });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.blob();
}

async function analyzeVideo(file) {
  const status = $("#video-status");
  const bar = $("#video-progress");
  $("#video-result").hidden = true;
  $("#video-links").replaceChildren();
  $("#video-progress-label").textContent = "Uploading";
  let job;
  try {
    const form = new FormData();
    form.append("file", file, file.name);
    job = await uploadWithProgress(`/v1/videos?${modelParam()}`, form, (f) => {
      bar.value = f * 100;
      setStatus(status, `Uploading ${file.name}: ${pct(f)}`);
    });
  } catch (error) {
    setStatus(status, error.message, true);
    return;
  }
  $("#video-progress-label").textContent = "Analysing";
  bar.value = 0;
  while (job.status === "queued" || job.status === "running") {
    const p = job.progress;
    if (p.frames_total) bar.value = (100 * p.frames_done) / p.frames_total;
    setStatus(status, job.status === "queued" ? "Waiting for the video before it…" :
              `Analysing: frame ${p.frames_done}${p.frames_total ? ` of ${p.frames_total}` : ""}`);
    await new Promise((r) => setTimeout(r, 1000));
    try {
      job = await api(job.links.self);
    } catch (error) {
      setStatus(status, error.message, true);
      return;
    }
  }
  if (job.status !== "done") {
    setStatus(status, job.error || `the job ${job.status}`, true);
    return;
  }
  bar.value = 100;
  const clip = job.result.clip;
  const people = job.result.people.length;
  const summary = `${job.source}: ${job.result.frames} frames (${job.result.duration_s.toFixed(1)} s), ` +
    `${people} ${people === 1 ? "person" : "people"}` + (clip.faces_seen ? `, mostly ${clip.dominant_emotion} ` +
    `(${clip.group} ${pct(clip.group_shares[clip.group])})` : ", no face found");
  setStatus(status, `Done in ${job.progress.seconds.toFixed(1)} s`);
  $("#video-summary").textContent = summary;
  if (job.links["timeline.png"]) {
    $("#video-timeline").src = URL.createObjectURL(await fetchBlob(job.links["timeline.png"]));
    $("#video-result").hidden = false;
  }
  $("#video-links").replaceChildren(...Object.entries(job.links).filter(([name]) => name !== "self").map(([name, link]) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `Download ${name}`;
    button.addEventListener("click", async () => {
      const a = document.createElement("a");
      a.href = URL.createObjectURL(await fetchBlob(link));
      a.download = name;
      document.body.append(a);
      a.click();
      a.remove();
    });
    li.append(button);
    return li;
  }));
}

// ---- wiring ------------------------------------------------------------------------------------------------

const PANELS = { photos: "photos", live: "live", video: "video-panel" };

function selectTab(name) {
  for (const [tab, panel] of Object.entries(PANELS)) {
    const on = tab === name;
    $(`#tab-${tab}`).setAttribute("aria-selected", String(on));
    $(`#tab-${tab}`).tabIndex = on ? 0 : -1;
    $(`#${panel}`).hidden = !on;
  }
  if (name !== "live" && live.stream) stopLive();
}

function init() {
  $("#tab-photos").addEventListener("click", () => selectTab("photos"));
  $("#tab-live").addEventListener("click", () => selectTab("live"));
  $("#tab-video").addEventListener("click", () => selectTab("video"));
  $("#video-file").addEventListener("change", (event) => {
    if (event.target.files.length) analyzeVideo(event.target.files[0]);
    event.target.value = "";
  });
  fetch("/health").then((r) => r.json()).then((h) => { $("#tab-video").hidden = !h.video; }).catch(() => {});
  $("#model").addEventListener("change", () => {
    showModelInfo();
    live.tracks = [];
  });
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("#key").value.trim();
    localStorage.setItem("ferkit-key", state.key);
    loadModels();
  });
  $("#files").addEventListener("change", (event) => {
    analyzeFiles(event.target.files);
    event.target.value = "";
  });
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    analyzeFiles(event.dataTransfer.files);
  });
  drop.tabIndex = 0;
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("#files").click(); }
  });
  $("#download-json").addEventListener("click", () =>
    download("ferkit-results.json", "application/json", JSON.stringify(state.results, null, 1)));
  $("#download-csv").addEventListener("click", () => download("ferkit-faces.csv", "text/csv", toCsv(state.results)));
  $("#clear").addEventListener("click", () => {
    state.results = [];
    $("#results").replaceChildren();
    setStatus($("#status"), "");
    for (const id of ["#download-json", "#download-csv", "#clear"]) $(id).disabled = true;
  });
  $("#live-start").addEventListener("click", startLive);
  $("#live-stop").addEventListener("click", stopLive);
  loadModels();
}

init();
