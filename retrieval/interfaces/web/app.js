"use strict";
// The page's script, served from the server (its policy allows no inline script). On a server
// with a token the page signs in once through POST /session: the answer is an HttpOnly cookie
// that the browser sends with the page's requests. The token itself is never kept.
const $ = (s) => document.querySelector(s);
let last = null;  // {kind: "json"|"upload", body, file}
let offset = 0;

async function call(url, options) {
  const res = await fetch(url, Object.assign({credentials: "same-origin"}, options));
  if (res.status === 401) {
    showSession({token_required: true, signed_in: false});
    throw new Error("This server needs an access token: enter it above.");
  }
  if (!res.ok) {
    let msg = res.statusText;
    try { msg = (await res.json()).detail || msg; } catch (e) {}
    throw new Error(msg);
  }
  return res;
}

function showSession(s) {
  $("#login").hidden = !s.token_required || s.signed_in;
  $("#logout").hidden = !s.token_required || !s.signed_in;
  if (!$("#login").hidden) $("#login [name=token]").focus();
}

async function checkSession() {
  try {
    const res = await fetch("/session", {credentials: "same-origin"});
    if (res.ok) showSession(await res.json());
  } catch (e) {}
}

function showError(message) {
  $("#status").className = "error";
  $("#status").textContent = message;
}

async function signIn(ev) {
  ev.preventDefault();
  const field = $("#login [name=token]");
  const token = field.value;
  field.value = "";
  const res = await fetch("/session", {method: "POST", credentials: "same-origin",
                                       headers: {"Content-Type": "application/json"},
                                       body: JSON.stringify({token})});
  if (!res.ok) {
    let msg = res.statusText;
    try { msg = (await res.json()).detail || msg; } catch (e) {}
    showError(`Not signed in: ${msg}`);
    return;
  }
  showSession({token_required: true, signed_in: true});
  $("#status").className = "";
  $("#status").textContent = "signed in";
  if (last) run(last, offset);
}

async function signOut() {
  await fetch("/session", {method: "DELETE", credentials: "same-origin"});
  $("#grid").textContent = "";
  $("#status").className = "";
  $("#status").textContent = "signed out";
  checkSession();
}

function filters() {
  const f = [];
  const v = (n) => $(`#filters [name=${n}]`).value.trim();
  if (v("path")) f.push(`path ~ ${v("path").includes("*") ? v("path") : "*" + v("path") + "*"}`);
  if (v("after")) f.push(`date >= ${v("after")}`);
  if (v("before")) f.push(`date < ${v("before")}`);
  for (const w of v("where").split(";")) if (w.trim()) f.push(w.trim());
  return f;
}

// Every matching shot of a video, not only its best: asked for on video searches only.
const segments = () => $("[name=target]").value === "video" && $("[name=segments]").checked;

function perPage() { return parseInt($("#filters [name=k]").value, 10); }

// Where the results end: the cutoff and the min score, when set (both cut before paging).
function cut() {
  const c = {};
  const cutoff = $("#filters [name=cutoff]").value;
  const min = $("#filters [name=min_score]").value.trim();
  if (cutoff) c.cutoff = cutoff;
  if (min !== "") c.min_score = parseFloat(min);
  return c;
}

// Fill `el` with `text`, the query words that matched it (`words`, as the text writes them)
// in <mark> elements: marked in the text itself, not only by colour. Text goes in as text
// nodes, never as HTML. Latin words are marked where they stand whole; Chinese, Japanese and
// Korean words wherever they occur (they sit inside runs without spaces).
const CJK = /[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]/u;
const escapeRe = (w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

function marked(el, text, words) {
  el.textContent = "";
  const parts = (words || []).filter((w) => w && w.trim()).sort((a, b) => b.length - a.length)
    .map((w) => CJK.test(w) ? escapeRe(w) : `(?<![\\p{L}\\p{N}])${escapeRe(w)}(?![\\p{L}\\p{N}])`);
  if (!parts.length) { el.textContent = text; return; }
  const re = new RegExp(parts.join("|"), "giu");
  let at = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > at) el.appendChild(document.createTextNode(text.slice(at, m.index)));
    const mark = document.createElement("mark");
    mark.textContent = m[0];
    el.appendChild(mark);
    at = m.index + m[0].length;
  }
  if (at < text.length) el.appendChild(document.createTextNode(text.slice(at)));
}

// A long recognised text, cut to about `room` characters around the first matched word.
function excerpt(text, words, room = 160) {
  const flat = text.split(/\s+/).join(" ").trim();
  if (flat.length <= room) return flat;
  const folded = flat.toLowerCase();
  const found = (words || []).map((w) => folded.indexOf(w.toLowerCase())).filter((i) => i >= 0);
  const first = found.length ? Math.min(...found) : 0;
  const start = first < room / 2 ? 0 : first - 30;
  const end = start + room;
  return (start ? "..." : "") + flat.slice(start, end).trim() + (end < flat.length ? "..." : "");
}

async function thumb(img, id) {
  try {
    const res = await call(`/items/${id}/thumbnail?size=256`);
    img.src = URL.createObjectURL(await res.blob());
  } catch (e) { img.alt = "no preview"; }
}

// A time in seconds as a player shows it: 01:23, or 1:02:03 from an hour on.
function clock(seconds) {
  const s = Math.floor((seconds || 0) + 0.001);
  const two = (n) => String(n).padStart(2, "0");
  const hours = Math.floor(s / 3600);
  return (hours ? `${hours}:` : "") + `${two(Math.floor((s % 3600) / 60))}:${two(s % 60)}`;
}

const fileName = (h) => h.path ? h.path.split("/").pop() : "";
const timeSpan = (h) => `${clock(h.start)}\u2013${clock(h.end)}`;

// A video's hit: its keyframe and the shot's time, a button that plays it from there.
function videoFrame(h) {
  const play = document.createElement("button");
  play.type = "button";
  play.className = "play";
  play.title = `play ${fileName(h)} from ${clock(h.start)}`;
  const img = document.createElement("img");
  img.alt = fileName(h);
  thumb(img, h.id);
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = timeSpan(h);
  play.append(img, time);
  play.addEventListener("click", () => playVideo(h));
  return play;
}

// The player: one <video> in a dialog, its file from /items/{id}/video (the browser asks for
// byte ranges as it seeks), started at the shot by a media fragment (#t=start).
const player = $("#player");
const screen = player.querySelector("video");

function playVideo(h) {
  const url = `/items/${h.id}/video`;
  player.querySelector(".title").textContent = `${fileName(h)} ${timeSpan(h)}`;
  screen.onloadedmetadata = () => {
    // where a browser ignores the fragment, seek to the shot
    if (Math.abs(screen.currentTime - h.start) > 0.25) screen.currentTime = h.start;
  };
  screen.onerror = () => explain(url, fileName(h));
  screen.src = `${url}#t=${h.start}`;
  player.showModal();
  screen.play().catch(() => {});  // autoplay refused: its controls play it
}

// A media element does not say why it cannot play: the server's answer for the first byte does
// (gone, changed since indexed, outside the folders), else it is the browser's format.
async function explain(url, name) {
  player.close();
  try {
    await call(url, {headers: {Range: "bytes=0-0"}});
    showError(`cannot play ${name}: this browser does not play its format`);
  } catch (e) {
    showError(`cannot play ${name}: ${e.message}`);
  }
}

function stopVideo() {
  screen.onerror = null;
  screen.pause();
  screen.removeAttribute("src");
  screen.load();  // lets go of the file
}

function show(hits, took, total, threshold) {
  const grid = $("#grid");
  grid.textContent = "";
  for (const h of hits) {
    const card = document.createElement("div");
    card.className = "hit";
    card.dataset.id = h.id;
    const m = h.metadata || {};
    const match = m.match || {};
    if (h.kind === "video") {
      card.appendChild(videoFrame(h));
    } else if (h.kind === "image") {
      const img = document.createElement("img");
      img.alt = h.text || h.path || "";
      thumb(img, h.id);
      card.appendChild(img);
    } else {
      const t = document.createElement("div");
      t.className = "text";
      const own = match.source === "ocr" ? excerpt(h.text || "", match.words) : h.text || "";
      marked(t, own, match.words);
      card.appendChild(t);
    }
    const meta = document.createElement("div");
    meta.className = "meta";
    const name = fileName(h);
    meta.innerHTML = `<span class="score">${h.score === null ? "" : h.score.toFixed(3)}</span> ` +
      `<span class="name"></span><div class="caption"></div><div class="generated"></div>` +
      `<div class="ocr"></div>`;
    meta.querySelector(".name").textContent = name;
    const words = (source) => match.source === source ? match.words : [];
    marked(meta.querySelector(".caption"), h.kind === "image" && h.text ? h.text : "",
           words("caption"));
    const generated = m.generated_caption;
    const gen = meta.querySelector(".generated");
    if (generated) {
      marked(gen, generated, words("generated"));
      gen.prepend("generated: ");
    } else {
      gen.textContent = m.source === "generated" ? "(generated caption)" : "";
    }
    // The text recognised in an image (OCR), labelled in words, its matched words marked.
    const ocr = meta.querySelector(".ocr");
    if (m.ocr_text) {
      marked(ocr, excerpt(m.ocr_text, words("ocr")), words("ocr"));
      ocr.prepend("text in image: ");
      ocr.title = m.ocr_text;
    } else if (m.source === "ocr") {
      ocr.textContent = "(text recognised in an image)";
    }
    card.appendChild(meta);
    const more = document.createElement("button");
    more.className = "more";
    more.textContent = "more like this";
    // more of the same kind: images like an image or a text, moments like a shot
    const like = {like: h.id, target: h.kind === "video" ? "video" : "image", keywords: false};
    more.onclick = () => run({kind: "json", body: like}, 0);
    card.appendChild(more);
    grid.appendChild(card);
  }
  $("#status").className = "";
  let status = hits.length ? `${hits.length} results in ${took} ms` : "no results";
  if (hits.length && hits[0].metadata && hits[0].metadata.score_kind === "keywords") {
    status += " (ranked by keywords; the first scores 1)";
  }
  if (total !== null && total !== undefined && threshold !== null) {
    status += `; ${total} in all, down to similarity ${threshold.toFixed(3)}`;
  }
  $("#status").textContent = status;
  $("#prev").hidden = offset === 0;
  $("#next").hidden = hits.length < perPage() ||
    (total !== null && total !== undefined && offset + hits.length >= total);
}

async function run(query, newOffset) {
  last = query;
  offset = newOffset;
  $("#status").textContent = "searching...";
  try {
    let res;
    if (query.kind === "upload") {
      const form = new FormData();
      form.append("image", query.file);
      form.append("k", perPage());
      form.append("offset", offset);
      form.append("target", $("[name=target]").value);
      if (segments()) form.append("segments", "true");
      for (const f of filters()) form.append("filters", f);
      for (const [name, value] of Object.entries(cut())) form.append(name, value);
      res = await call("/search/upload", {method: "POST", body: form});
    } else {
      const keywords = $("[name=keywords]").checked;
      const body = Object.assign({k: perPage(), offset, target: $("[name=target]").value,
                                  segments: segments(), filters: filters(), keywords,
                                  hybrid: !keywords && $("[name=hybrid]").checked},
                                 keywords ? {} : cut(), query.body);
      res = await call("/search", {method: "POST", body: JSON.stringify(body),
                                   headers: {"Content-Type": "application/json"}});
    }
    const data = await res.json();
    show(data.hits, data.took_ms, data.total, data.threshold);
  } catch (e) {
    showError(e.message);
  }
}

$("#search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = $("[name=q]").value.trim();
  if (q) run({kind: "json", body: {text: q}}, 0);
});
$("[name=file]").addEventListener("change", (ev) => {
  if (ev.target.files.length) run({kind: "upload", file: ev.target.files[0]}, 0);
});
const drop = $("#drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  if (ev.dataTransfer.files.length) run({kind: "upload", file: ev.dataTransfer.files[0]}, 0);
});
// Keywords alone and keywords fused with vectors are two rankings: one at a time.
$("[name=keywords]").addEventListener("change", (ev) => {
  if (ev.target.checked) $("[name=hybrid]").checked = false;
});
$("[name=hybrid]").addEventListener("change", (ev) => {
  if (ev.target.checked) $("[name=keywords]").checked = false;
});
// "every shot" is a choice of video searches only
const segmentsChoice = () => { $("#segments").hidden = $("[name=target]").value !== "video"; };
$("[name=target]").addEventListener("change", segmentsChoice);
segmentsChoice();
player.addEventListener("close", stopVideo);
player.querySelector(".close").addEventListener("click", () => player.close());
player.addEventListener("click", (ev) => { if (ev.target === player) player.close(); });
$("#next").onclick = () => last && run(last, offset + perPage());
$("#prev").onclick = () => last && run(last, Math.max(0, offset - perPage()));
$("#login").addEventListener("submit", signIn);
$("#logout").addEventListener("click", signOut);
checkSession();
