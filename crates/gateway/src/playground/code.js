// Snippets (Python, Node, curl) that send exactly the playground's current request.

// Keyword arguments the openai Python client takes by name; anything else goes in extra_body.
const PY_KWARGS = new Set([
  "model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed",
  "presence_penalty", "frequency_penalty", "n", "logprobs", "top_logprobs", "logit_bias", "user",
  "response_format", "tools", "tool_choice", "stream_options",
]);

// JSON.stringify leaves U+2028/U+2029 raw; escaped they survive any editor or terminal.
const str = (s) => JSON.stringify(s).replace(/[\u2028\u2029]/g, (c) => "\\u" + c.charCodeAt(0).toString(16));

const FLAVORS = {
  python: { unit: "    ", nul: "None", yes: "True", no: "False", comma: ",", key: str, brace: ["{", "}"] },
  js: { unit: "  ", nul: "null", yes: "true", no: "false", comma: ",", key: (k) => (/^[A-Za-z_$][\w$]*$/.test(k) ? k : str(k)), brace: ["{ ", " }"] },
  json: { unit: "  ", nul: "null", yes: "true", no: "false", comma: "", key: str, brace: ["{", "}"] },
};

/** A JSON value as a literal of `flavor` (python, js, json): short containers on one line. */
export function literal(v, flavor, indent = "") {
  const f = FLAVORS[flavor];
  if (v === null || v === undefined) return f.nul;
  if (v === true) return f.yes;
  if (v === false) return f.no;
  if (typeof v !== "object") return str(v);
  const inner = indent + f.unit;
  const arr = Array.isArray(v);
  const items = arr ? v.map((x) => literal(x, flavor, inner)) : Object.keys(v).map((k) => f.key(k) + ": " + literal(v[k], flavor, inner));
  if (!items.length) return arr ? "[]" : "{}";
  const [open, close] = arr ? ["[", "]"] : f.brace;
  const flat = open + items.join(", ") + close;
  if (!flat.includes("\n") && indent.length + flat.length <= 72) return flat;
  const last = items.length - 1;
  return open.trim() + "\n" + items.map((x, i) => inner + x + (i < last ? "," : f.comma) + "\n").join("") + indent + close.trim();
}

/** The body with each long data URL cut to its start and its size, for showing on screen. */
export function truncateDataUrls(body) {
  return JSON.parse(JSON.stringify(body), (k, v) => {
    if (typeof v !== "string") return v;
    const m = /^(data:[^;,]*;base64,)([A-Za-z0-9+/=]*)$/.exec(v);
    if (!m || m[2].length <= 48) return v;
    const bytes = Math.floor((m[2].length * 3) / 4);
    const size = bytes >= 1 << 20 ? (bytes / (1 << 20)).toFixed(1) + " MB" : Math.max(1, Math.round(bytes / 1024)) + " KB";
    return m[1] + m[2].slice(0, 12) + "…[" + size + "]";
  });
}

// The view differs from the copied text only in shortened images, so that what is shown runs
// as it is (the key is this tab's own, shown to whoever typed it).
function prepare(body, opts = {}) {
  return {
    body: opts.forView ? truncateDataUrls(body) : body,
    key: opts.apiKey || "",
    baseUrl: opts.baseUrl,
  };
}

export function pythonSnippet(req, opts) {
  const { body, key, baseUrl } = prepare(req, opts);
  const args = [];
  const extra = {};
  for (const [k, v] of Object.entries(body)) {
    if (k === "stream") continue;
    if (PY_KWARGS.has(k)) args.push(`    ${k}=${literal(v, "python", "    ")},`);
    else extra[k] = v;
  }
  if (Object.keys(extra).length) args.push(`    extra_body=${literal(extra, "python", "    ")},`);
  args.push("    stream=True,");
  return [
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${str(baseUrl)}, api_key=${str(key || "unused")})`,
    "",
    "stream = client.chat.completions.create(",
    ...args,
    ")",
    "for chunk in stream:",
    "    if chunk.choices and chunk.choices[0].delta.content:",
    '        print(chunk.choices[0].delta.content, end="", flush=True)',
    "print()",
    "",
  ].join("\n");
}

export function nodeSnippet(req, opts) {
  const { body, key, baseUrl } = prepare(req, opts);
  return [
    'import OpenAI from "openai";',
    "",
    `const client = new OpenAI({ baseURL: ${str(baseUrl)}, apiKey: ${str(key || "unused")} });`,
    "",
    `const stream = await client.chat.completions.create(${literal({ ...body, stream: true }, "js")});`,
    "for await (const chunk of stream) {",
    '  process.stdout.write(chunk.choices[0]?.delta?.content ?? "");',
    "}",
    'process.stdout.write("\\n");',
    "",
  ].join("\n");
}

// Double quotes where nothing inside is special to the shell, else single quotes.
const shellQuote = (s) => (/^[\w@%+=:,./~ \u2026\u2022-]*$/.test(s) ? `"${s}"` : "'" + s.replace(/'/g, "'\\''") + "'");

export function curlSnippet(req, opts) {
  const { body, key, baseUrl } = prepare(req, opts);
  const url = baseUrl + "/chat/completions";
  const lines = [`curl -N ${/^[\w@%+=:,./~-]+$/.test(url) ? url : shellQuote(url)} \\`, '  -H "Content-Type: application/json" \\'];
  if (key) lines.push(`  -H ${shellQuote("Authorization: Bearer " + key)} \\`);
  // A quoted heredoc: the shell leaves the body alone whatever the messages contain.
  lines.push("  -d @- <<'EOF'", literal({ ...body, stream: true }, "json"), "EOF", "");
  return lines.join("\n");
}
