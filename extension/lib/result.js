// A run's final result as text and as a file name: shared by the popup's detail and the
// result tab, so Copy, Save and Open give the same thing.

// The text of a step's outputs: its `text`, else its `content`, else the outputs as JSON.
export function outputText(outputs) {
  const o = outputs || {};
  return typeof o.text === "string" ? o.text : typeof o.content === "string" ? o.content : JSON.stringify(o, null, 2);
}

// A file name from the run's title (page data, untrusted): letters, digits, spaces, dashes
// and underscores only, so nothing in it can name a folder or another extension.
function fileNameFor(title) {
  const base = String(title || "").normalize("NFKC").replace(/[^\p{L}\p{N} _-]+/gu, " ")
    .replace(/\s+/g, " ").trim().slice(0, 80);
  return `${base || "result"}.md`;
}

// Download `text` as a Markdown file (a blob URL, revoked once the download has it).
export function saveMarkdown(text, title, doc = document) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/markdown;charset=utf-8" }));
  const a = doc.createElement("a");
  a.href = url;
  a.download = fileNameFor(title);
  doc.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return a.download;
}
