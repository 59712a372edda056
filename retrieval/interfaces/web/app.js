// The page's script, served from the server (its policy allows no inline script). On a server
// with a token the page signs in once through POST /session: the answer is an HttpOnly cookie
// that the browser sends with the page's requests. The token itself is never kept.
//
// A search is a state (the query, filters, target and page) written in the address: every new
// search or page is a history entry, and reloading, a bookmark, Back and Forward run the search
// of their address again. A search by an uploaded image names the image by the id the server
// keeps it under (POST /uploads; ?upload=ID), "more like this" the item (?like=ID).
import {$, call, fileName, queryWords, thumbUrl, whenSignInNeeded} from "./util.js";
import {showCards} from "./results.js";
import {closeViewer, openViewer, setViewerHooks} from "./viewer.js";
import {showInfo} from "./info.js";

// The address's fields: name in the URL -> [form field, default].
const FIELDS = {q: ["q", ""], target: ["target", "image"], segments: ["segments", false],
                path: ["path", ""], after: ["after", ""], before: ["before", ""],
                where: ["where", ""], hybrid: ["hybrid", false], keywords: ["keywords", false],
                cutoff: ["cutoff", ""], min: ["min_score", ""], k: ["k", "24"]};
let current = null;  // the state of the search shown: {...FIELDS, like, upload, page}
let shown = null;  // what the grid shows: {hits, offset, total, hasNext, words}
const uploads = new Map();  // upload id -> File, for the searches of this visit

const field = (name) => document.querySelector(`[name=${name}]`);

function readForm() {
  const s = {};
  for (const [key, [name]] of Object.entries(FIELDS)) {
    const f = field(name);
    s[key] = f.type === "checkbox" ? f.checked : f.value.trim();
  }
  return Object.assign(s, {like: null, upload: null, page: 1});
}

function writeForm(s) {
  for (const [key, [name]] of Object.entries(FIELDS)) {
    const f = field(name);
    if (f.type === "checkbox") f.checked = s[key];
    else f.value = s[key];
  }
  segmentsChoice();
}

function toAddress(s) {
  const p = new URLSearchParams();
  if (s.like !== null) p.set("like", s.like);
  if (s.upload !== null) p.set("upload", s.upload);
  for (const [key, [, fallback]] of Object.entries(FIELDS)) {
    if (s[key] !== fallback) p.set(key, s[key] === true ? "1" : s[key]);
  }
  if (s.page > 1) p.set("page", s.page);
  const query = p.toString();
  return query ? `?${query}` : location.pathname;
}

function fromAddress(search) {
  const p = new URLSearchParams(search);
  const s = {};
  for (const [key, [name, fallback]] of Object.entries(FIELDS)) {
    const value = p.get(key);
    s[key] = typeof fallback === "boolean" ? value === "1" : value === null ? fallback : value;
    const f = field(name);
    if (f.tagName === "SELECT" && ![...f.options].some((o) => o.value === s[key])) {
      s[key] = fallback;  // a value the form does not offer: the default
    }
  }
  const id = (v) => /^\d{1,18}$/.test(v || "") ? v : null;
  s.like = id(p.get("like"));
  s.upload = /^[0-9a-f]{64}$/.test(p.get("upload") || "") ? p.get("upload") : null;
  s.page = Math.max(1, parseInt(p.get("page"), 10) || 1);
  return s;
}

const hasQuery = (s) => s.q !== "" || s.like !== null || s.upload !== null;
const perPage = (s) => parseInt(s.k, 10) || 24;

function filters(s) {
  const f = [];
  if (s.path) f.push(`path ~ ${s.path.includes("*") ? s.path : "*" + s.path + "*"}`);
  if (s.after) f.push(`date >= ${s.after}`);
  if (s.before) f.push(`date < ${s.before}`);
  for (const w of s.where.split(";")) if (w.trim()) f.push(w.trim());
  return f;
}

// Where the results end: the cutoff and the min score, when set (both cut before paging).
function cut(s) {
  const c = {};
  if (s.cutoff) c.cutoff = s.cutoff;
  if (s.min !== "") c.min_score = parseFloat(s.min);
  return c;
}

// Every matching shot of a video, not only its best: asked for on video searches only.
const segments = (s) => s.target === "video" && s.segments;

async function request(s) {
  const offset = (s.page - 1) * perPage(s);
  if (s.upload !== null) {
    const form = new FormData();
    form.append("image", await uploaded(s.upload));
    if (s.q) form.append("text", s.q);
    form.append("k", perPage(s));
    form.append("offset", offset);
    form.append("target", s.target);
    if (segments(s)) form.append("segments", "true");
    for (const f of filters(s)) form.append("filters", f);
    for (const [name, value] of Object.entries(cut(s))) form.append(name, value);
    return call("/search/upload", {method: "POST", body: form});
  }
  const keywords = s.like === null && s.keywords;
  const body = Object.assign({k: perPage(s), offset, target: s.target, segments: segments(s),
                              filters: filters(s), keywords,
                              hybrid: !keywords && s.like === null && s.hybrid},
                             keywords ? {} : cut(s),
                             s.like !== null ? {like: parseInt(s.like, 10)} : {text: s.q});
  return call("/search", {method: "POST", body: JSON.stringify(body),
                          headers: {"Content-Type": "application/json"}});
}

// The image a search is by: from this visit, else from the server that keeps it.
async function uploaded(id) {
  if (!uploads.has(id)) {
    try {
      const blob = await (await call(`/uploads/${id}`)).blob();
      uploads.set(id, new File([blob], "example", {type: blob.type}));
    } catch (e) {
      if (e.status === 404) {
        throw new Error("The image this search was by is no longer kept on the server "
                        + "(it keeps them for a day): drop it or choose it again.");
      }
      throw e;
    }
  }
  return uploads.get(id);
}

// Run the search of state `s`; `how`: "push" a new history entry, "replace" this one, or
// "none" (the address already says it: a reload, Back or Forward).
async function run(s, how = "push") {
  current = s;
  const address = toAddress(s);
  if (how === "push" && address !== location.search && address !== location.pathname + location.search) {
    history.pushState(null, "", address);
  } else if (how !== "none") {
    history.replaceState(null, "", address);
  }
  document.title = s.q ? `${s.q} \u2013 retrieval` : "retrieval";
  showExample(s);
  setStatus("searching...");
  try {
    const data = await (await request(s)).json();
    if (current !== s) return null;  // a newer search started meanwhile
    show(s, data);
    return shown;
  } catch (e) {
    if (current === s) showError(e.message);
    return null;
  }
}

function show(s, data) {
  const hits = data.hits;
  const offset = (s.page - 1) * perPage(s);
  const total = data.total ?? null;
  const hasNext = hits.length >= perPage(s) && (total === null || offset + hits.length < total);
  shown = {hits, offset, total, hasNext, words: queryWords(s.q)};
  showCards(hits, (i) => openViewer(shown, i), like);
  let status = hits.length ? `${hits.length} results in ${data.took_ms} ms` : "no results";
  if (hits.length && hits[0].metadata && hits[0].metadata.score_kind === "keywords") {
    status += " (ranked by keywords; the first scores 1)";
  }
  if (total !== null && data.threshold !== null && data.threshold !== undefined) {
    status += `; ${total} in all, down to similarity ${data.threshold.toFixed(3)}`;
  }
  setStatus(status);
  $("#notice").textContent = data.notice || "";
  $("#prev").hidden = offset === 0;
  $("#next").hidden = !hasNext;
  const pages = total !== null ? Math.max(1, Math.ceil(total / perPage(s))) : null;
  $("#page").textContent = offset === 0 && !hasNext ? ""
    : pages ? `page ${s.page} of ${pages}` : `page ${s.page}`;
}

function setStatus(text) {
  $("#status").className = "";
  $("#status").textContent = text;
}

function showError(message) {
  $("#status").className = "error";
  $("#status").textContent = message;
}

// What a search by example is by: an uploaded image, or an item ("more like this").
function showExample(s) {
  const box = $("#example");
  box.hidden = s.like === null && s.upload === null;
  if (box.hidden) return;
  const img = $("img", box);
  const label = $(".label", box);
  img.hidden = false;
  img.onerror = () => { img.hidden = true; };
  if (s.upload !== null) {
    label.textContent = "Searching by an uploaded image";
    img.alt = "the uploaded image";
    img.src = uploads.has(s.upload) ? URL.createObjectURL(uploads.get(s.upload))
      : `/uploads/${s.upload}`;
  } else {
    label.textContent = `Searching by example of item ${s.like}`;
    img.alt = `item ${s.like}`;
    img.src = thumbUrl(s.like, 128);
    call(`/items/${s.like}`).then((r) => r.json()).then((h) => {
      if (current === s && fileName(h)) label.textContent = `More like ${fileName(h)}`;
    }).catch(() => {});
  }
}

// more of the same kind: images like an image or a text, moments like a shot
function like(h) {
  const s = Object.assign(readForm(), {q: "", like: String(h.id), keywords: false,
                                       target: h.kind === "video" ? "video" : "image"});
  writeForm(s);
  run(s);
}

async function byImage(file) {
  setStatus("uploading...");
  try {
    const kept = await (await call("/uploads", {method: "POST", body: formWith(file)})).json();
    uploads.set(kept.id, file);
    const s = Object.assign(readForm(), {q: "", upload: kept.id});
    writeForm(s);
    run(s);
  } catch (e) {
    showError(e.message);
  }
}

function formWith(file) {
  const form = new FormData();
  form.append("image", file);
  return form;
}

// Turning a page from the viewer: the next or previous page's results.
async function turn(delta) {
  if (!current) return null;
  return run(Object.assign({}, current, {page: current.page + delta}));
}

// The address's search, on arrival, reload, Back and Forward.
function fromHere() {
  closeViewer();
  const s = fromAddress(location.search);
  writeForm(s);
  if (hasQuery(s)) {
    run(s, "none");
  } else {
    current = shown = null;
    $("#grid").textContent = "";
    $("#prev").hidden = $("#next").hidden = true;
    $("#page").textContent = "";
    showExample(s);
    setStatus("");
    document.title = "retrieval";
  }
}

// --- signing in ------------------------------------------------------------------------------

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

async function signIn(ev) {
  ev.preventDefault();
  const token = $("#login [name=token]").value;
  $("#login [name=token]").value = "";
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
  setStatus("signed in");
  showInfo();
  if (current) run(current, "replace");
}

async function signOut() {
  await fetch("/session", {method: "DELETE", credentials: "same-origin"});
  $("#grid").textContent = "";
  setStatus("signed out");
  checkSession();
}

// --- wiring ----------------------------------------------------------------------------------

whenSignInNeeded(() => showSession({token_required: true, signed_in: false}));
setViewerHooks({like, turn, error: showError});

$("#search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const s = readForm();
  if (s.q) {
    run(s);
  } else if (current && (current.like !== null || current.upload !== null)) {
    run(Object.assign(s, {like: current.like, upload: current.upload}));  // new filters
  }
});
// Clearing the example clears its results, and the address with them.
$("#example .clear").addEventListener("click", () => {
  history.pushState(null, "", toAddress(Object.assign(readForm(), {q: ""})));
  fromHere();
  field("q").focus();
});
field("file").addEventListener("change", (ev) => {
  if (ev.target.files.length) byImage(ev.target.files[0]);
  ev.target.value = "";
});
const drop = $("#drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  if (ev.dataTransfer.files.length) byImage(ev.dataTransfer.files[0]);
});
// Keywords alone and keywords fused with vectors are two rankings: one at a time.
field("keywords").addEventListener("change", (ev) => {
  if (ev.target.checked) field("hybrid").checked = false;
});
field("hybrid").addEventListener("change", (ev) => {
  if (ev.target.checked) field("keywords").checked = false;
});
// "every shot" is a choice of video searches only
const segmentsChoice = () => { $("#segments").hidden = field("target").value !== "video"; };
field("target").addEventListener("change", segmentsChoice);
const turnPage = (delta) => {
  if (!current) return;
  run(Object.assign({}, current, {page: current.page + delta}));
  window.scrollTo(0, 0);
};
$("#next").addEventListener("click", () => turnPage(1));
$("#prev").addEventListener("click", () => turnPage(-1));
$("#login").addEventListener("submit", signIn);
$("#logout").addEventListener("click", signOut);
// "/" goes to the search box from anywhere but a field being typed in
document.addEventListener("keydown", (ev) => {
  const typing = ev.target.closest("input, textarea, select, [contenteditable]");
  if (ev.key !== "/" || typing || ev.ctrlKey || ev.metaKey || ev.altKey || $("#viewer").open) {
    return;
  }
  ev.preventDefault();
  field("q").focus();
  field("q").select();
});
window.addEventListener("popstate", fromHere);
// On a phone the filters start folded, unless the address sets one.
if (matchMedia("(max-width: 600px)").matches) {
  const s = fromAddress(location.search);
  $("#more-filters").open = Object.entries(FIELDS).some(
    ([key, [, fallback]]) => !["q", "target", "segments"].includes(key) && s[key] !== fallback);
}
checkSession();
showInfo();
fromHere();
