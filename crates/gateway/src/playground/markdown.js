// Markdown to DOM for untrusted model output: built node by node, never from HTML strings.

const FENCE = /^( {0,3})(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const HR = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^( *)([-*+]|\d{1,9}[.)])(?:( +)(.*))?$/;
const TABLE_SEP = /^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$/;

/** Renders `text` as a DocumentFragment; whatever HTML it holds comes out as literal text. */
export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  blocks(String(text ?? "").replace(/\r\n?/g, "\n").split("\n"), frag, false);
  return frag;
}

function el(tag, parent, cls) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (parent) parent.appendChild(e);
  return e;
}

const blank = (line) => line.trim() === "";

// A line that ends a paragraph without a blank line before it.
function startsBlock(line) {
  if (FENCE.test(line) || HEADING.test(line) || HR.test(line) || QUOTE.test(line)) return true;
  const m = ITEM.exec(line);
  // As in CommonMark, only a list starting at 1 interrupts a paragraph ("in 2024. Then" is prose).
  return !!m && m[4] !== undefined && m[4].trim() !== "" && (!/\d/.test(m[2]) || parseInt(m[2], 10) === 1);
}

// `tight`: list item content, where a paragraph's text goes straight into the <li>.
function blocks(lines, parent, tight) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (blank(line)) {
      i++;
    } else if ((m = FENCE.exec(line))) {
      const [, indent, fence, lang] = m;
      const code = [];
      for (i++; i < lines.length; i++) {
        const close = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(lines[i]);
        if (close && close[1][0] === fence[0] && close[1].length >= fence.length) { i++; break; }
        code.push(lines[i].startsWith(indent) ? lines[i].slice(indent.length) : lines[i].trimStart());
      }
      const pre = el("pre", parent);
      const c = el("code", pre);
      const safeLang = lang.replace(/[^\w+#.-]/g, "");
      if (safeLang) {
        c.className = "language-" + safeLang;
        pre.dataset.language = safeLang;
      }
      c.textContent = code.join("\n");
    } else if ((m = HEADING.exec(line))) {
      inline(m[2] || "", el("h" + m[1].length, parent));
      i++;
    } else if (HR.test(line)) {
      el("hr", parent);
      i++;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && !blank(lines[i]) && (QUOTE.test(lines[i]) || !startsBlock(lines[i]))) {
        const q = QUOTE.exec(lines[i]);
        inner.push(q ? q[1] : lines[i]);
        i++;
      }
      blocks(inner, el("blockquote", parent), false);
    } else if ((m = ITEM.exec(line)) && m[4] !== undefined) {
      i = list(lines, i, parent);
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      i = table(lines, i, parent);
    } else {
      const p = tight ? parent : el("p", parent);
      let first = true;
      while (i < lines.length && !blank(lines[i]) && (first || !startsBlock(lines[i]))) {
        if (!first) el("br", p);
        inline(lines[i].trim(), p);
        first = false;
        i++;
      }
    }
  }
}

function list(lines, start, parent) {
  const first = ITEM.exec(lines[start]);
  const ordered = /\d/.test(first[2]);
  const base = first[1].length;
  const listEl = el(ordered ? "ol" : "ul", parent);
  const n = parseInt(first[2], 10);
  if (ordered && n !== 1) listEl.start = n;
  let i = start;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length < base || /\d/.test(m[2]) !== ordered) break;
    const spaces = m[3] ? m[3].length : 1;
    const contentIndent = m[1].length + m[2].length + (spaces > 4 ? 1 : spaces);
    const content = [m[4] ?? ""];
    let loose = false;
    for (i++; i < lines.length; i++) {
      const line = lines[i];
      const indent = line.length - line.trimStart().length;
      if (blank(line)) {
        let j = i + 1;
        while (j < lines.length && blank(lines[j])) j++;
        if (j >= lines.length) { i = j; break; }
        const nextIndent = lines[j].length - lines[j].trimStart().length;
        if (nextIndent >= contentIndent) { content.push(""); loose = true; continue; }
        break;
      }
      if (indent >= contentIndent) { content.push(line.slice(contentIndent)); continue; }
      if (ITEM.test(line) || startsBlock(line) || blank(lines[i - 1])) break;
      content.push(line.trim()); // a lazy continuation line
    }
    blocks(content, el("li", listEl), !loose);
    // A blank line then a sibling item: keep scanning this list.
    while (i < lines.length && blank(lines[i])) {
      const next = ITEM.exec(lines[i + 1] ?? "");
      if (next && next[1].length === base && /\d/.test(next[2]) === ordered) i++;
      else return i;
    }
  }
  return i;
}

function cells(line) {
  let s = line.trim();
  if (s.startsWith("|")) s = s.slice(1);
  if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
  return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

function table(lines, start, parent) {
  const head = cells(lines[start]);
  const align = cells(lines[start + 1]).map((c) =>
    c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : "");
  const wrap = el("div", parent, "table-wrap");
  const t = el("table", wrap);
  const row = (values, tr, tag) => head.forEach((_, k) => {
    const cell = el(tag, tr);
    if (align[k]) cell.className = "align-" + align[k];
    inline(values[k] ?? "", cell);
  });
  row(head, el("tr", el("thead", t)), "th");
  const body = el("tbody", t);
  let i = start + 2;
  for (; i < lines.length && !blank(lines[i]) && lines[i].includes("|"); i++) row(cells(lines[i]), el("tr", body), "td");
  return i;
}

/** The URL if it is http(s) or mailto, else null: `javascript:`, `data:` and relative ones stay text. */
export function safeHref(url) {
  try {
    const u = new URL(url);
    return ["http:", "https:", "mailto:"].includes(u.protocol) ? u.href : null;
  } catch {
    return null;
  }
}

function link(href, parent) {
  const a = el("a", parent);
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  return a;
}

const CODE_SPAN = /^(`+)([\s\S]*?[^`])\1(?!`)/;
const LINK = /^(!?)\[([^\]]*)\]\(\s*<?([^\s<>()]*(?:\([^\s()]*\)[^\s<>()]*)*)>?(?:\s+"[^"]*")?\s*\)/;
const AUTOLINK = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/;
const BARE_URL = /^https?:\/\/[^\s<>"'`]+/;
const STRONG_STAR = /^\*\*(?!\s)([\s\S]*?\S)\*\*(?!\*)/;
// Underscores open and close only outside words (`snake__case__names` stay as they are).
const STRONG_UNDER = /^__(?!\s)([\s\S]*?\S)__(?![\p{L}\p{N}_])/u;
const EM_STAR = /^\*([^\s*](?:[^*]*[^\s*])?)\*/;
const EM_UNDER = /^_([^\s_](?:[^_]*[^\s_])?)_(?![\p{L}\p{N}_])/u;
const STRIKE = /^~~(?!\s)([\s\S]*?\S)~~/;

// Inline spans of one line; `inLink` keeps anchors from nesting.
function inline(text, parent, inLink = false) {
  let buf = "";
  const flush = () => {
    if (buf) parent.appendChild(document.createTextNode(buf));
    buf = "";
  };
  let i = 0;
  while (i < text.length) {
    const rest = text.slice(i);
    const ch = text[i];
    const prev = i > 0 ? text[i - 1] : " ";
    let m;
    if (ch === "\\" && /^[\\`*_{}[\]()#+\-.!|~<>]/.test(text[i + 1] || "")) {
      buf += text[i + 1];
      i += 2;
    } else if (ch === "`" && (m = CODE_SPAN.exec(rest))) {
      flush();
      const inner = m[2];
      el("code", parent).textContent = /^ .* $/.test(inner) ? inner.slice(1, -1) : inner;
      i += m[0].length;
    } else if ((ch === "[" || ch === "!") && (m = LINK.exec(rest))) {
      const [whole, bang, label, url] = m;
      const href = safeHref(url);
      flush();
      if (bang) {
        // Images are never loaded (no remote fetches, no tracking pixels): a link to them at most.
        const alt = label || "image";
        if (href && !inLink) link(href, parent).textContent = "🖼 " + alt;
        else buf += alt;
      } else if (href && !inLink) {
        inline(label || url, link(href, parent), true);
      } else {
        buf += whole;
      }
      i += whole.length;
    } else if (ch === "<" && (m = AUTOLINK.exec(rest)) && !inLink && safeHref(m[1])) {
      flush();
      link(safeHref(m[1]), parent).textContent = m[1];
      i += m[0].length;
    } else if (ch === "h" && !inLink && !/[\p{L}\p{N}]/u.test(prev) && (m = BARE_URL.exec(rest))) {
      let url = m[0].replace(/[.,;:!?'"*_~]+$/, "");
      // Drop a closing paren the URL did not open: "(see https://x.y/z)".
      while (url.endsWith(")") && (url.match(/\(/g) || []).length < (url.match(/\)/g) || []).length) url = url.slice(0, -1);
      const href = safeHref(url);
      if (href) {
        flush();
        link(href, parent).textContent = url;
      } else {
        buf += url;
      }
      i += url.length;
    } else if ((m = ch === "*" ? STRONG_STAR.exec(rest) : ch === "_" && !/[\p{L}\p{N}_]/u.test(prev) ? STRONG_UNDER.exec(rest) : null)) {
      flush();
      inline(m[1], el("strong", parent), inLink);
      i += m[0].length;
    } else if (ch === "*" && (m = EM_STAR.exec(rest))) {
      flush();
      inline(m[1], el("em", parent), inLink);
      i += m[0].length;
    } else if (ch === "_" && !/[\p{L}\p{N}_]/u.test(prev) && (m = EM_UNDER.exec(rest))) {
      flush();
      inline(m[1], el("em", parent), inLink);
      i += m[0].length;
    } else if (ch === "~" && (m = STRIKE.exec(rest))) {
      flush();
      inline(m[1], el("del", parent), inLink);
      i += m[0].length;
    } else {
      buf += ch;
      i++;
    }
  }
  flush();
}
