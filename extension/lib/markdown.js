// Markdown from a model's answer, as DOM nodes. The text is untrusted (it is made from web
// pages), so this renderer never parses HTML: every piece of text goes in through
// createTextNode, tags in the text read as text. Links are made only for http(s) URLs,
// open in a new tab with rel=noopener and no referrer, and are never fetched; images are
// never loaded (an image becomes a link to it). Nesting is capped and very long paragraphs
// are shown as plain text, so no input can make the renderer recurse deeply or run long.

const MAX_DEPTH = 8; // blockquotes and lists nested deeper read as the deepest level
const MAX_INLINE_DEPTH = 6; // emphasis inside links inside emphasis...
const MAX_INLINE_CHARS = 20000; // a paragraph longer than this is shown as it is

const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: "\"", apos: "'", nbsp: "\u00a0", "#39": "'" };

function decodeEntities(text) {
  return text.replace(/&(#x[0-9a-f]{1,6}|#[0-9]{1,7}|[a-z]{2,6}|#39);/gi, (whole, name) => {
    const lower = name.toLowerCase();
    if (lower in ENTITIES) return ENTITIES[lower];
    if (lower.startsWith("#")) {
      const code = lower[1] === "x" ? parseInt(lower.slice(2), 16) : parseInt(lower.slice(1), 10);
      if (code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff)) return String.fromCodePoint(code);
    }
    return whole;
  });
}

// The URL when it is an absolute http(s) URL, else null (javascript:, data:, relative...).
export function safeHref(raw) {
  let url;
  try {
    url = new URL(String(raw || "").trim());
  } catch {
    return null;
  }
  return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
}

function link(doc, href, children) {
  const a = doc.createElement("a");
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  a.referrerPolicy = "no-referrer";
  a.title = href;
  a.append(...children);
  return a;
}

// ---- inline -------------------------------------------------------------------------------

const INLINE = new RegExp([
  "(`+)([^`]|[^`][\\s\\S]*?[^`])\\1(?!`)", // 1,2 code span
  "!\\[([^\\]\\n]{0,500})\\]\\(\\s*<?([^)\\s>]{0,2000})>?(?:\\s+\"[^\"\\n]{0,300}\")?\\s*\\)", // 3,4 image
  "\\[([^\\]\\n]{1,500})\\]\\(\\s*<?([^)\\s>]{0,2000})>?(?:\\s+\"[^\"\\n]{0,300}\")?\\s*\\)", // 5,6 link
  "<(https?://[^>\\s]{1,2000})>", // 7 autolink
  "(https?://[^\\s<>()\\[\\]]{1,2000}[^\\s<>()\\[\\].,;:!?'\"*_~])", // 8 bare URL
  "\\*\\*(?=\\S)([\\s\\S]{0,2000}?\\S)\\*\\*", // 9 strong
  "(?<![\\w.])__(?=\\S)([\\s\\S]{0,2000}?\\S)__(?!\\w)", // 10 strong
  "~~(?=\\S)([\\s\\S]{0,2000}?\\S)~~", // 11 strike
  "\\*(?=[^\\s*])([\\s\\S]{0,2000}?[^\\s*])\\*", // 12 emphasis
  "(?<![\\w.])_(?=\\S)([\\s\\S]{0,2000}?\\S)_(?!\\w)", // 13 emphasis
  "( {2,}|\\\\)\\n", // 14 hard line break
].join("|"), "g");

function inline(doc, text, depth = 0) {
  const out = [];
  const pushText = (t) => { if (t) out.push(doc.createTextNode(decodeEntities(t))); };
  if (depth > MAX_INLINE_DEPTH) {
    pushText(text);
    return out;
  }
  const re = new RegExp(INLINE.source, "g");
  let last = 0;
  let m;
  while ((m = re.exec(text)) !== null) {
    pushText(text.slice(last, m.index));
    last = re.lastIndex;
    if (m[1] !== undefined) {
      const code = doc.createElement("code");
      code.textContent = m[2].replace(/\n/g, " ").replace(/^ (.*) $/, "$1");
      out.push(code);
    } else if (m[3] !== undefined) {
      const href = safeHref(m[4]);
      const label = `[image: ${decodeEntities(m[3]) || "no description"}]`;
      out.push(href ? link(doc, href, [doc.createTextNode(label)]) : doc.createTextNode(label));
    } else if (m[5] !== undefined) {
      const href = safeHref(m[6]);
      const children = inline(doc, m[5], depth + 1);
      out.push(href ? link(doc, href, children) : wrap(doc, "span", children));
    } else if (m[7] !== undefined || m[8] !== undefined) {
      const raw = m[7] ?? m[8];
      const href = safeHref(raw);
      out.push(href ? link(doc, href, [doc.createTextNode(raw)]) : doc.createTextNode(raw));
    } else if (m[9] !== undefined || m[10] !== undefined) {
      out.push(wrap(doc, "strong", inline(doc, m[9] ?? m[10], depth + 1)));
    } else if (m[11] !== undefined) {
      out.push(wrap(doc, "del", inline(doc, m[11], depth + 1)));
    } else if (m[12] !== undefined || m[13] !== undefined) {
      out.push(wrap(doc, "em", inline(doc, m[12] ?? m[13], depth + 1)));
    } else if (m[14] !== undefined) {
      out.push(doc.createElement("br"));
    }
  }
  pushText(text.slice(last));
  return out;
}

function wrap(doc, tag, children) {
  const el = doc.createElement(tag);
  el.append(...children);
  return el;
}

function paragraph(doc, lines, tag = "p") {
  const text = lines.join("\n").trim();
  const el = doc.createElement(tag);
  if (text.length > MAX_INLINE_CHARS) {
    el.className = "md-plain";
    el.textContent = text;
  } else {
    el.append(...inline(doc, text));
  }
  return el;
}

// ---- blocks -------------------------------------------------------------------------------

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_RULE = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function cells(line) {
  let s = line.trim();
  if (s.startsWith("|")) s = s.slice(1);
  if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
  return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

function table(doc, head, rows) {
  const t = doc.createElement("table");
  const thead = doc.createElement("thead");
  const tr = doc.createElement("tr");
  for (const c of cells(head)) tr.append(wrap(doc, "th", inline(doc, c)));
  thead.append(tr);
  const tbody = doc.createElement("tbody");
  for (const row of rows) {
    const r = doc.createElement("tr");
    for (const c of cells(row)) r.append(wrap(doc, "td", inline(doc, c)));
    tbody.append(r);
  }
  t.append(thead, tbody);
  const box = doc.createElement("div");
  box.className = "md-table";
  box.append(t);
  return box;
}

// A list block (its lines, items and continuations), nested by indentation with a stack.
function list(doc, lines, depth) {
  const stack = [];
  let current = null; // the last <li>'s text lines
  const flush = () => {
    if (current) current.li.append(...inline(doc, current.lines.join("\n").trim()));
    current = null;
  };
  let top = null;
  for (const line of lines) {
    const m = ITEM.exec(line);
    if (!m) {
      if (current) current.lines.push(line.trim());
      continue;
    }
    flush();
    const indent = m[1].replace(/\t/g, "    ").length;
    const ordered = /\d/.test(m[2]);
    while (stack.length && stack[stack.length - 1].indent > indent) stack.pop();
    let level = stack[stack.length - 1];
    if (!level || (indent > level.indent && stack.length < MAX_DEPTH - depth)) {
      const el = doc.createElement(ordered ? "ol" : "ul");
      if (ordered) {
        const start = parseInt(m[2], 10);
        if (start !== 1) el.start = start;
      }
      if (level) {
        const parentLi = level.el.lastElementChild;
        (parentLi || level.el).append(el);
      } else {
        top = el;
      }
      level = { el, indent };
      stack.push(level);
    }
    const li = doc.createElement("li");
    level.el.append(li);
    current = { li, lines: [m[3]] };
  }
  flush();
  return top;
}

function blocks(doc, lines, depth) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    let m;
    if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence)) body.push(lines[i++]);
      i += 1;
      const pre = doc.createElement("pre");
      const code = doc.createElement("code");
      code.textContent = body.join("\n");
      if (m[2]) code.dataset.lang = m[2];
      pre.append(code);
      out.push(pre);
      continue;
    }
    if ((m = HEADING.exec(line))) {
      const h = doc.createElement(`h${Math.min(6, m[1].length + 2)}`);
      h.append(...inline(doc, m[2]));
      out.push(h);
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      out.push(doc.createElement("hr"));
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && lines[i].trim() && (QUOTE.test(lines[i]) || !startsBlock(lines[i]))) {
        body.push(lines[i].replace(QUOTE, ""));
        i += 1;
      }
      const q = doc.createElement("blockquote");
      if (depth + 1 >= MAX_DEPTH) q.append(paragraph(doc, body));
      else q.append(...blocks(doc, body, depth + 1));
      out.push(q);
      continue;
    }
    if (ITEM.test(line)) {
      const body = [];
      while (i < lines.length) {
        const l = lines[i];
        if (!l.trim()) {
          // A blank line ends the list unless an item or an indented continuation follows.
          const next = lines[i + 1];
          if (next !== undefined && (ITEM.test(next) || /^\s{2,}\S/.test(next))) {
            i += 1;
            continue;
          }
          break;
        }
        if (!ITEM.test(l) && !/^\s/.test(l) && startsBlock(l)) break;
        body.push(l);
        i += 1;
      }
      out.push(list(doc, body, depth));
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      const head = line;
      const rows = [];
      i += 2;
      while (i < lines.length && lines[i].trim() && lines[i].includes("|")) rows.push(lines[i++]);
      out.push(table(doc, head, rows));
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() && !(para.length && startsBlock(lines[i]))) para.push(lines[i++]);
    out.push(paragraph(doc, para));
  }
  return out;
}

// The answer as a fragment of safe nodes, ready to append.
export function renderMarkdown(text, doc = document) {
  const fragment = doc.createDocumentFragment();
  const lines = String(text ?? "").replace(/\r\n?/g, "\n").split("\n");
  fragment.append(...blocks(doc, lines, 0));
  return fragment;
}
