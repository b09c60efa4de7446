// The playground's behaviour: models, conversation, streaming, parameters, images and View code.
import { renderMarkdown } from "/playground/markdown.js";
import { pythonSnippet, nodeSnippet, curlSnippet } from "/playground/code.js";

const $ = (id) => document.getElementById(id);
const API = location.origin + "/v1";
const PHONE = matchMedia("(max-width: 700px)");
const MAX_IMAGE_BYTES = 20 << 20;
const SNIPPETS = { python: pythonSnippet, node: nodeSnippet, curl: curlSnippet };

const state = {
  models: [],
  key: sessionStorage.getItem("kiln.apiKey") || "",
  turns: [], // {role: "user", text, images} | {role: "assistant", text} | {role: "error"}; each with its el
  attachments: [], // data URLs waiting in the composer
  run: null, // the generation in flight: {controller, turn}
  stick: true, // follow the stream unless the user scrolled up
  codeLang: localStorage.getItem("kiln.codeLang") || "python",
};

// ---- parameters -------------------------------------------------------------------------------

// `def`: the server's own default, so a value equal to it is left out of the request. The
// fields are built from this list, so a parameter is written down once.
const PARAMS = [
  { id: "temperature", label: "Temperature", key: "temperature", def: 1, min: 0, max: 2, step: 0.05, slider: true },
  { id: "top_p", label: "Top P", key: "top_p", def: 1, min: 0, max: 1, step: 0.01, slider: true },
  { id: "max_tokens", label: "Max tokens", key: "max_tokens", int: true, min: 1, step: 1, placeholder: "auto", hint: true },
  { id: "stop_seqs", label: "Stop sequences", key: "stop", list: true, placeholder: "One per line, up to 4 (\\n for a newline)" },
  { id: "seed", label: "Seed", key: "seed", int: true, step: 1, placeholder: "random" },
  { id: "presence_penalty", label: "Presence penalty", key: "presence_penalty", def: 0, min: -2, max: 2, step: 0.1, slider: true },
  { id: "frequency_penalty", label: "Frequency penalty", key: "frequency_penalty", def: 0, min: -2, max: 2, step: 0.1, slider: true },
];

function paramField(p) {
  const field = el("div", p.slider ? "field slider" : "field");
  field.dataset.param = p.key;
  const label = el("label", "", p.label);
  label.htmlFor = p.id;
  let input;
  if (p.list) {
    input = el("textarea");
    input.rows = 2;
    input.spellcheck = false;
    field.append(label, input);
  } else {
    input = el("input");
    input.type = "number";
    for (const a of ["min", "max", "step"]) if (p[a] !== undefined) input[a] = String(p[a]);
    if (p.def !== undefined) input.value = String(p.def);
    const row = el("div", "row");
    row.append(label, input);
    field.appendChild(row);
  }
  input.id = p.id;
  if (p.placeholder) input.placeholder = p.placeholder;
  if (p.slider) {
    const range = field.appendChild(el("input"));
    range.type = "range";
    range.id = p.id + "-range";
    for (const a of ["min", "max", "step"]) range[a] = String(p[a]);
    range.value = String(p.def);
    range.tabIndex = -1; // the number field beside it is the keyboard's way in
    range.setAttribute("aria-label", p.label + " slider");
  }
  if (p.hint) field.appendChild(el("p", "hint")).id = p.id + "-hint";
  const error = field.appendChild(el("p", "error"));
  error.id = p.id + "-error";
  error.hidden = true;
  return field;
}

function readParam(p) {
  const input = $(p.id);
  const raw = input.value.trim();
  if (p.list) {
    // `\n` and `\t` typed literally: the usual stop sequences are otherwise impossible to enter.
    const seqs = input.value.split("\n").filter((s) => s !== "").map((s) => s.replace(/\\n/g, "\n").replace(/\\t/g, "\t"));
    if (seqs.length > 4) return { error: `At most 4 stop sequences (${seqs.length} given).` };
    return { value: seqs.length ? seqs : undefined };
  }
  if (input.validity.badInput) return { error: "Enter a number." };
  if (raw === "") return {};
  const n = Number(raw);
  if (!Number.isFinite(n)) return { error: "Enter a number." };
  if (p.int && !Number.isSafeInteger(n)) return { error: Number.isInteger(n) ? "Too large." : "Enter a whole number." };
  if (p.min !== undefined && p.max !== undefined && (n < p.min || n > p.max)) return { error: `Between ${p.min} and ${p.max}.` };
  if (p.min !== undefined && n < p.min) return { error: `At least ${p.min}.` };
  const ctx = currentModel()?.context_length;
  if (p.key === "max_tokens" && ctx && n > ctx) return { error: `At most ${ctx}, the model's context.` };
  return { value: n === p.def ? undefined : n };
}

/** The parameters to send (only those changed from their defaults) and the fields in error. */
function readParams() {
  const params = {};
  const errors = [];
  for (const p of PARAMS) {
    const { value, error } = readParam(p);
    const msg = $(p.id + "-error");
    msg.hidden = !error;
    msg.textContent = error || "";
    $(p.id).setAttribute("aria-invalid", error ? "true" : "false");
    if (error) errors.push(p);
    else if (value !== undefined) params[p.key] = value;
  }
  return { params, errors };
}

function saveSettings() {
  const values = Object.fromEntries(PARAMS.map((p) => [p.id, $(p.id).value]));
  sessionStorage.setItem("kiln.settings", JSON.stringify({ system: $("system").value, values }));
}

function restoreSettings() {
  let saved;
  try {
    saved = JSON.parse(sessionStorage.getItem("kiln.settings") || "null");
  } catch {
    saved = null;
  }
  if (!saved) return;
  $("system").value = saved.system || "";
  for (const p of PARAMS) if (typeof saved.values?.[p.id] === "string") $(p.id).value = saved.values[p.id];
  syncRanges();
}

function syncRanges() {
  for (const p of PARAMS) {
    const range = $(p.id + "-range");
    if (range) range.value = $(p.id).value === "" ? p.def : $(p.id).value;
  }
}

function resetParams() {
  for (const p of PARAMS) $(p.id).value = p.def ?? "";
  syncRanges();
  readParams();
  saveSettings();
}

// ---- the request --------------------------------------------------------------------------------

function userMessage(text, images) {
  if (!images.length) return { role: "user", content: text };
  const parts = text ? [{ type: "text", text }] : [];
  for (const url of images) parts.push({ type: "image_url", image_url: { url } });
  return { role: "user", content: parts };
}

/**
 * The exact body sent, and the one View code shows. `draft`: add the composer's text and
 * images as the next user message, as View code does before anything is sent.
 */
function buildRequest({ draft = false } = {}) {
  const { params, errors } = readParams();
  const messages = [];
  const system = $("system").value;
  if (system.trim()) messages.push({ role: "system", content: system });
  for (const t of state.turns) {
    if (t.role === "user") messages.push(userMessage(t.text, t.images));
    else if (t.role === "assistant" && t.text) messages.push({ role: "assistant", content: t.text });
  }
  const text = $("prompt").value.trim();
  if (draft && (text || state.attachments.length)) messages.push(userMessage(text, state.attachments));
  const body = { model: $("model").value, messages, ...params, stream: true, stream_options: { include_usage: true } };
  return { body, errors };
}

const headers = (extra = {}) => (state.key ? { ...extra, Authorization: "Bearer " + state.key } : extra);

async function errorOf(res) {
  const text = await res.text().catch(() => "");
  try {
    return { status: res.status, message: JSON.parse(text).error.message || text };
  } catch {
    return { status: res.status, message: text || res.statusText || "Request failed" };
  }
}

// Server-sent events from a fetch body: the data of each event. Chunks may split anywhere,
// even inside a UTF-8 character, hence the streaming decoder and the kept partial line.
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let data = [];
  let done = false;
  try {
    while (!done) {
      const chunk = await reader.read();
      done = chunk.done;
      buf += done ? decoder.decode() : decoder.decode(chunk.value, { stream: true });
      const lines = buf.split(/\r\n|\r|\n/);
      buf = done ? "" : lines.pop();
      if (done) lines.push("");
      for (const line of lines) {
        if (line === "") {
          if (data.length) yield data.join("\n");
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line[5] === " " ? 6 : 5));
        }
      }
    }
  } finally {
    if (!done) reader.cancel().catch(() => {});
  }
}

// ---- the conversation ---------------------------------------------------------------------------

const messagesEl = $("messages");

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function addTurn(turn) {
  state.turns.push(turn);
  messagesEl.appendChild(turn.el);
  $("empty").hidden = true;
  scrollDown(true);
}

function dropTurn(turn) {
  state.turns.splice(state.turns.indexOf(turn), 1);
  turn.el.remove();
  $("empty").hidden = state.turns.length > 0;
}

function scrollDown(force) {
  if (force) state.stick = true;
  if (state.stick) messagesEl.scrollTop = messagesEl.scrollHeight;
}

function userTurn(text, images) {
  const turn = { role: "user", text, images, el: el("div", "message user") };
  if (images.length) {
    const row = turn.el.appendChild(el("div", "images"));
    for (const url of images) {
      const img = row.appendChild(el("img"));
      img.src = url;
      img.alt = "Attached image";
    }
  }
  if (text) turn.el.appendChild(el("div", "content", text));
  return turn;
}

function assistantTurn(model) {
  const turn = { role: "assistant", text: "", el: el("div", "message assistant streaming"), raf: 0 };
  const role = turn.el.appendChild(el("div", "role"));
  const icon = role.appendChild(el("img"));
  icon.src = "/playground/favicon.svg";
  icon.alt = "";
  role.appendChild(document.createTextNode(model));
  turn.content = turn.el.appendChild(el("div", "content"));
  const typing = turn.content.appendChild(el("span", "typing"));
  typing.setAttribute("aria-label", "Waiting for the first token");
  for (let i = 0; i < 3; i++) typing.appendChild(el("i"));
  return turn;
}

function errorTurn(status, message) {
  const turn = { role: "error", el: el("div", "message error") };
  turn.el.setAttribute("role", "alert");
  turn.el.appendChild(el("strong", "", status ? `Error ${status}` : "Error"));
  turn.el.appendChild(document.createTextNode(message));
  return turn;
}

function paint(turn) {
  turn.raf = 0;
  turn.content.replaceChildren(renderMarkdown(turn.text));
  scrollDown();
}

// One markdown render per frame however fast the tokens come.
function schedulePaint(turn) {
  if (!turn.raf) turn.raf = requestAnimationFrame(() => paint(turn));
}

function showStats(turn, s) {
  const stats = turn.el.appendChild(el("div", "stats"));
  const item = (text, cls) => stats.appendChild(el("span", cls || "", text));
  if (s.ttft !== null) item(`TTFT ${Math.round(s.ttft)} ms`);
  if (s.tps !== null) item(`${s.tps.toFixed(1)} tokens/s`);
  if (s.usage) item(`prompt ${s.usage.prompt_tokens} · completion ${s.usage.completion_tokens} tokens`);
  else if (s.chunks) item(`completion ≈${s.chunks} tokens`);
  if (s.stopped) item("stopped", "flag");
  else if (s.finish && s.finish !== "stop") item(`finish: ${s.finish}`, "flag");
  if (turn.text) {
    const copy = stats.appendChild(el("button", "btn ghost small copy", "Copy"));
    copy.type = "button";
    copy.setAttribute("aria-label", "Copy this answer");
    copy.addEventListener("click", () => copyText(turn.text, copy));
  }
}

async function generate() {
  const { body } = buildRequest();
  const turn = assistantTurn(body.model);
  addTurn(turn);
  const controller = new AbortController();
  state.run = { controller, turn };
  updateControls();
  const t0 = performance.now();
  let first = 0;
  let last = 0;
  let chunks = 0;
  let usage = null;
  let finish = null;
  let stopped = false;
  let failure = null;
  try {
    const res = await fetch(API + "/chat/completions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!res.ok) failure = await errorOf(res);
    else {
      for await (const data of sseEvents(res.body)) {
        if (data === "[DONE]") break;
        let chunk;
        try {
          chunk = JSON.parse(data);
        } catch {
          continue;
        }
        if (chunk.error) {
          failure = { status: 0, message: chunk.error.message || "The stream failed." };
          break;
        }
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices?.[0];
        if (!choice) continue;
        const delta = choice.delta?.content;
        if (delta) {
          last = performance.now();
          first ||= last;
          chunks++;
          turn.text += delta;
          schedulePaint(turn);
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
  } catch (e) {
    if (e.name === "AbortError") stopped = true;
    else failure = { status: 0, message: `The connection failed (${e.message}).` };
  }
  cancelAnimationFrame(turn.raf);
  state.run = null;
  turn.el.classList.remove("streaming");
  if (turn.text || !failure) {
    paint(turn);
    const tokens = usage?.completion_tokens ?? chunks;
    // Tokens that arrived in one read give no decode time: then rate them over the whole request.
    const span = last - first >= 20 ? last - first : last - t0;
    showStats(turn, {
      ttft: first ? first - t0 : null,
      tps: first && tokens > 1 && span > 0 ? tokens / (span / 1000) : null,
      usage,
      chunks,
      finish,
      stopped,
    });
  } else {
    dropTurn(turn);
  }
  if (failure) {
    addTurn(errorTurn(failure.status, failure.message));
    if (failure.status === 401) showKeyBox("This server needs an API key: enter it above, then Regenerate.");
  }
  scrollDown();
  updateControls();
  if (!document.activeElement || document.activeElement === document.body) $("prompt").focus();
}

function send() {
  if (state.run || $("send").disabled) return;
  const text = $("prompt").value.trim();
  if (!text && !state.attachments.length) return;
  const { errors } = readParams();
  if (errors.length) {
    note("Fix the parameters marked in red first.");
    setParamsOpen(true);
    $(errors[0].id).focus();
    return;
  }
  addTurn(userTurn(text, state.attachments));
  $("prompt").value = "";
  state.attachments = [];
  renderAttachments();
  autosize();
  $("prompt").focus();
  generate();
}

function regenerate() {
  if (state.run) return;
  while (state.turns.length && state.turns.at(-1).role !== "user") dropTurn(state.turns.at(-1));
  if (state.turns.length) generate();
  else updateControls();
}

function clear() {
  state.run?.controller.abort();
  for (const t of [...state.turns]) dropTurn(t);
  note("");
  updateControls();
  $("prompt").focus();
}

// ---- models and the API key -----------------------------------------------------------------------

const currentModel = () => state.models.find((m) => m.id === $("model").value);
const isVision = (m) => !!m?.input_modalities?.includes("image");
let retryTimer = 0;
let loadingPolls = 0;

function banner(text, isError = false) {
  const b = $("banner");
  b.hidden = !text;
  b.textContent = text || "";
  b.classList.toggle("error", isError);
}

function retry(ms) {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(loadModels, ms);
}

// Whether this server wants a key: asked once, so that a keyed server's page opens on the key
// field instead of on a refused request.
let keyRequired = null;

async function loadModels() {
  clearTimeout(retryTimer);
  if (keyRequired === null) {
    try {
      const res = await fetch("/playground/config.json");
      keyRequired = !!(await res.json()).api_key_required;
    } catch {
      banner("Can't reach the Kiln server. Retrying…", true);
      return retry(2000);
    }
  }
  if (keyRequired && !state.key) {
    showKeyBox("This server needs an API key: enter it above.");
    return;
  }
  let res;
  try {
    res = await fetch(API + "/models", { headers: headers() });
  } catch {
    banner("Can't reach the Kiln server. Retrying…", true);
    return retry(2000);
  }
  if (res.status === 401) {
    showKeyBox(state.key ? "That API key was refused: enter a valid one above." : "This server needs an API key: enter it above.");
    return;
  }
  if (res.status === 503) {
    banner("The models are loading… the page updates when they're ready.");
    return retry(2000);
  }
  if (!res.ok) {
    const e = await errorOf(res);
    banner(`Could not list the models: ${e.message} (HTTP ${res.status}). Retrying…`, true);
    return retry(5000);
  }
  const list = await res.json().catch(() => null);
  state.models = Array.isArray(list?.data) ? list.data : [];
  banner(state.models.length ? "" : "This server lists no models.", !state.models.length);
  fillModels();
  // A model still loading has no context_length yet: ask again for a while.
  if (state.models.some((m) => m.context_length == null) && loadingPolls++ < 30) retry(2000);
}

function fillModels() {
  const select = $("model");
  const wanted = select.value || sessionStorage.getItem("kiln.model");
  select.replaceChildren(
    ...state.models.map((m) => {
      const o = el("option", "", isVision(m) ? `${m.id} · vision` : m.id);
      o.value = m.id;
      return o;
    }),
  );
  if (state.models.some((m) => m.id === wanted)) select.value = wanted;
  select.disabled = !state.models.length;
  modelChanged();
}

function modelChanged() {
  const m = currentModel();
  if (m) sessionStorage.setItem("kiln.model", m.id);
  $("empty-model").textContent = m?.id || "your model";
  const ctx = m?.context_length;
  $("max_tokens").placeholder = "auto";
  if (ctx) $("max_tokens").max = ctx;
  else $("max_tokens").removeAttribute("max");
  $("max_tokens-hint").textContent = ctx
    ? `Empty: until the answer ends or the context (${ctx.toLocaleString("en")} tokens) is full.`
    : "Empty: until the answer ends or the context is full.";
  readParams();
  updateControls();
}

function showKeyBox(message) {
  $("key-box").hidden = false;
  $("api-key").value = state.key;
  banner(message, true);
  $("api-key").focus();
}

function saveKey() {
  state.key = $("api-key").value.trim();
  if (state.key) sessionStorage.setItem("kiln.apiKey", state.key);
  else sessionStorage.removeItem("kiln.apiKey");
  banner("");
  loadModels();
}

// ---- images ----------------------------------------------------------------------------------------

const historyImages = () => state.turns.reduce((n, t) => n + (t.images?.length || 0), 0);

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

async function addFiles(files) {
  const m = currentModel();
  if (!isVision(m)) return note(`${m?.id || "This model"} does not take images: pick a vision model to attach them.`);
  const images = [...files].filter((f) => f.type.startsWith("image/"));
  const limit = m.max_images_per_request ?? Infinity;
  const room = Math.max(0, limit - historyImages() - state.attachments.length);
  let problem = images.length < files.length ? "Only images can be attached." : "";
  if (images.length > room) problem = `At most ${limit} images per request: ${images.length - room} not added.`;
  for (const f of images.slice(0, room)) {
    if (f.size > MAX_IMAGE_BYTES) {
      problem = `${f.name} is over ${MAX_IMAGE_BYTES >> 20} MB.`;
      continue;
    }
    try {
      state.attachments.push(await readDataUrl(f));
    } catch {
      problem = `Could not read ${f.name}.`;
    }
  }
  renderAttachments();
  if (problem) note(problem);
}

function renderAttachments() {
  const box = $("attachments");
  box.replaceChildren(
    ...state.attachments.map((url, i) => {
      const thumb = el("div", "thumb");
      const img = thumb.appendChild(el("img"));
      img.src = url;
      img.alt = `Attached image ${i + 1}`;
      const x = thumb.appendChild(el("button", "", "×"));
      x.type = "button";
      x.setAttribute("aria-label", `Remove image ${i + 1}`);
      x.title = "Remove";
      x.addEventListener("click", () => {
        state.attachments.splice(i, 1);
        renderAttachments();
        $("prompt").focus();
      });
      return thumb;
    }),
  );
  box.hidden = !state.attachments.length;
  updateControls();
}

// ---- controls -----------------------------------------------------------------------------------

let noteTimer = 0;
let noteKind = "";
/** A line beside the buttons: a passing notice ("transient", gone after a few seconds) or why Send is off ("block"). */
function note(text, kind = "transient") {
  clearTimeout(noteTimer);
  $("composer-note").textContent = text || "";
  noteKind = text ? kind : "";
  if (text && kind === "transient") noteTimer = setTimeout(() => note(""), 5000);
}

// Why the request cannot go as it stands, or "".
function blocker() {
  const m = currentModel();
  if (!m) return "";
  const images = historyImages() + state.attachments.length;
  if (images && !isVision(m)) return `${m.id} does not take images: remove them, Clear, or pick a vision model.`;
  const limit = m.max_images_per_request;
  if (limit && images > limit) return `${images} images: ${m.id} takes at most ${limit} per request.`;
  return "";
}

function updateControls() {
  const m = currentModel();
  const busy = !!state.run;
  const vision = isVision(m);
  const block = blocker();
  const hasDraft = !!$("prompt").value.trim() || state.attachments.length > 0;
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("send").disabled = !m || !hasDraft || !!block;
  $("regenerate").disabled = busy || !m || !!block || !state.turns.some((t) => t.role === "user");
  $("clear").disabled = !state.turns.length && !busy;
  const attach = $("attach");
  attach.disabled = !vision;
  attach.title = vision ? "Attach images (or paste or drop them)" : `${m?.id || "This model"} does not take images`;
  attach.setAttribute("aria-label", attach.title);
  $("file").disabled = !vision;
  const count = $("image-count");
  const n = historyImages() + state.attachments.length;
  count.hidden = !vision && !n;
  count.textContent = m?.max_images_per_request ? `${n} / ${m.max_images_per_request} images` : `${n} images`;
  if (block) note(block, "block");
  else if (noteKind === "block") note("");
}

function autosize() {
  const p = $("prompt");
  p.style.height = "auto";
  p.style.height = Math.min(p.scrollHeight, 220) + "px";
}

async function copyText(text, button, fallback) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    // No clipboard API (a plain-http origin) or no permission: select it for the user instead.
    if (fallback) {
      fallback.focus();
      fallback.select();
      try {
        ok = document.execCommand("copy");
      } catch {
        ok = false;
      }
    }
  }
  const label = button.textContent;
  button.textContent = ok ? "Copied" : "Press Ctrl+C";
  setTimeout(() => (button.textContent = label), 1500);
}

// ---- theme and panels ----------------------------------------------------------------------------

const THEMES = ["system", "light", "dark"];

function applyTheme(choice) {
  if (!THEMES.includes(choice)) choice = "system";
  if (choice === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = choice;
  const next = THEMES[(THEMES.indexOf(choice) + 1) % THEMES.length];
  const btn = $("theme");
  btn.dataset.choice = choice;
  btn.title = `Theme: ${choice} (click for ${next})`;
  btn.setAttribute("aria-label", btn.title);
}

function setParamsOpen(open) {
  document.body.dataset.params = open ? "open" : "closed";
  $("params-toggle").setAttribute("aria-expanded", String(open));
  if (!PHONE.matches) localStorage.setItem("kiln.paramsPanel", open ? "open" : "closed");
}

// ---- View code --------------------------------------------------------------------------------------

function renderCode() {
  const { body, errors } = buildRequest({ draft: true });
  const snippet = SNIPPETS[state.codeLang] || pythonSnippet;
  const opts = { baseUrl: API, apiKey: state.key };
  $("code").textContent = snippet(body, { ...opts, forView: true });
  $("code-full").value = snippet(body, opts);
  for (const tab of document.querySelectorAll("#code-dialog [data-lang]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.lang === state.codeLang));
  }
  $("code-hint").textContent = errors.length
    ? "Some parameters are invalid and left out: fix the fields marked in red."
    : "The conversation so far, the message being written, and every parameter changed from its default.";
}

// ---- wiring -------------------------------------------------------------------------------------

function init() {
  $("param-fields").replaceWith(...PARAMS.map(paramField));
  applyTheme(localStorage.getItem("kiln.theme") || "system");
  $("theme").addEventListener("click", () => {
    const next = THEMES[(THEMES.indexOf($("theme").dataset.choice) + 1) % THEMES.length];
    localStorage.setItem("kiln.theme", next);
    applyTheme(next);
  });

  setParamsOpen(!PHONE.matches && localStorage.getItem("kiln.paramsPanel") !== "closed");
  PHONE.addEventListener("change", () => setParamsOpen(!PHONE.matches && localStorage.getItem("kiln.paramsPanel") !== "closed"));
  $("params-toggle").addEventListener("click", () => setParamsOpen(document.body.dataset.params !== "open"));
  $("params-close").addEventListener("click", () => setParamsOpen(false));
  document.addEventListener("pointerdown", (e) => {
    if (PHONE.matches && document.body.dataset.params === "open" && !$("params").contains(e.target) && !$("params-toggle").contains(e.target)) {
      setParamsOpen(false);
    }
  });

  restoreSettings();
  for (const p of PARAMS) {
    const input = $(p.id);
    const range = $(p.id + "-range");
    input.addEventListener("input", () => {
      if (range && input.value !== "" && !input.validity.badInput) range.value = input.value;
      readParams();
      saveSettings();
    });
    range?.addEventListener("input", () => {
      input.value = range.value;
      readParams();
      saveSettings();
    });
  }
  $("system").addEventListener("input", saveSettings);
  $("reset-params").addEventListener("click", resetParams);
  readParams();

  const prompt = $("prompt");
  prompt.addEventListener("keydown", (e) => {
    // keyCode 229: a key that an input method is still composing (Safari fires it after compositionend).
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      send();
    }
  });
  prompt.addEventListener("input", () => {
    autosize();
    updateControls();
  });
  $("send").addEventListener("click", send);
  $("stop").addEventListener("click", () => {
    state.run?.controller.abort();
    prompt.focus();
  });
  $("regenerate").addEventListener("click", regenerate);
  $("clear").addEventListener("click", clear);

  $("model").addEventListener("change", modelChanged);
  $("save-key").addEventListener("click", saveKey);
  $("api-key").addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      saveKey();
    }
  });
  // A form only so that browsers treat the key as a password: it must never submit (form-action 'none').
  $("key-box").addEventListener("submit", (e) => e.preventDefault());
  if (state.key) $("key-box").hidden = false;
  $("api-key").value = state.key;

  messagesEl.addEventListener("scroll", () => {
    state.stick = messagesEl.scrollHeight - messagesEl.scrollTop - messagesEl.clientHeight < 48;
  });

  $("attach").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", () => {
    addFiles($("file").files);
    $("file").value = "";
  });
  document.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files || [])].filter((f) => f.type.startsWith("image/"));
    if (files.length) {
      e.preventDefault();
      addFiles(files);
    }
  });
  const hasFiles = (e) => !!e.dataTransfer?.types?.includes("Files");
  let dragDepth = 0;
  const hint = $("drop-hint");
  document.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    dragDepth++;
    const m = currentModel();
    hint.textContent = isVision(m) ? "Drop images to attach" : `${m?.id || "This model"} does not take images`;
    hint.hidden = false;
  });
  document.addEventListener("dragleave", (e) => {
    if (hasFiles(e) && --dragDepth <= 0) {
      dragDepth = 0;
      hint.hidden = true;
    }
  });
  document.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = isVision(currentModel()) ? "copy" : "none";
  });
  document.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth = 0;
    hint.hidden = true;
    addFiles(e.dataTransfer.files);
  });

  const dialog = $("code-dialog");
  $("view-code").addEventListener("click", () => {
    renderCode();
    dialog.showModal();
  });
  $("close-code").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => prompt.focus());
  // A click on the backdrop lands on the dialog itself, outside its box.
  dialog.addEventListener("click", (e) => {
    const r = dialog.getBoundingClientRect();
    if (e.target === dialog && (e.clientX < r.left || e.clientX > r.right || e.clientY < r.top || e.clientY > r.bottom)) dialog.close();
  });
  for (const tab of document.querySelectorAll("#code-dialog [data-lang]")) {
    tab.addEventListener("click", () => {
      state.codeLang = tab.dataset.lang;
      localStorage.setItem("kiln.codeLang", state.codeLang);
      renderCode();
    });
  }
  $("copy-code").addEventListener("click", () => copyText($("code-full").value, $("copy-code"), $("code-full")));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && PHONE.matches && document.body.dataset.params === "open" && !dialog.open) setParamsOpen(false);
  });

  updateControls();
  loadModels();
  prompt.focus();
}

init();
