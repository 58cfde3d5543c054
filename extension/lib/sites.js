// The user's per-site rules ([[sites]] in config.toml, which the host sends with `config`),
// applied before anything is read from a page: a page on a `never` site is not captured from
// the toolbar, the shortcut or the context menu, and the person is told why. The host checks
// again on its side (host/hybrid_engine/sites.py is the same matching, and its reference).
//
// A match is a host ("mail.example": that host only), "*." and a host (the host and every
// subdomain) or an IP network in CIDR form ("10.0.0.0/8", "fc00::/7").

export const RULES = ["never", "local_only", "strip_query"];

// The host of a page as compared: the URL parser gives it lower-cased and in punycode; the
// trailing dot of a fully qualified name is dropped. null: the URL names no host.
export function hostOf(url) {
  if (!url) return null;
  let u;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  // A blob: or view-source: page shows another URL's content: its site is that URL's.
  if (u.protocol === "blob:" || u.protocol === "view-source:") return hostOf(u.pathname);
  if (!["http:", "https:", "ws:", "wss:", "ftp:"].includes(u.protocol) || !u.hostname) return null;
  return u.hostname.replace(/\.$/, "").replace(/^\[|\]$/g, "");
}

function normalPattern(text) {
  let host = String(text || "").trim().toLowerCase().replace(/\.$/, "");
  const wild = host.startsWith("*.");
  if (wild) host = host.slice(2);
  try {
    host = new URL(`http://${host}/`).hostname; // punycode, as the page's host is
  } catch {
    return null;
  }
  return { host, wild };
}

function ipv4(text) {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) return null;
  const parts = m.slice(1).map(Number);
  if (parts.some((n) => n > 255)) return null;
  return parts.reduce((acc, n) => acc * 256n + BigInt(n), 0n);
}

function ipv6(text) {
  const mapped = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (mapped) {
    const v4 = ipv4(mapped[2]);
    if (v4 === null) return null;
    text = `${mapped[1]}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const head = halves[0] ? halves[0].split(":") : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
  const missing = 8 - head.length - tail.length;
  if (missing < 0 || (halves.length === 1 && missing !== 0)) return null;
  const groups = [...head, ...Array(missing).fill("0"), ...tail];
  if (groups.some((g) => !/^[0-9a-f]{1,4}$/i.test(g))) return null;
  return groups.reduce((acc, g) => acc * 65536n + BigInt(parseInt(g, 16)), 0n);
}

// An address as [version, value]; an IPv4-mapped IPv6 address counts as its IPv4 address.
function address(host) {
  const v4 = ipv4(host);
  if (v4 !== null) return [4, v4];
  const v6 = host.includes(":") ? ipv6(host) : null;
  if (v6 === null) return null;
  if (v6 >> 32n === 0xffffn) return [4, v6 & 0xffffffffn];
  return [6, v6];
}

function inNetwork(host, cidr) {
  const [base, bitsText] = cidr.split("/");
  const net = address(base.trim().toLowerCase());
  const addr = address(host);
  if (!net || !addr || net[0] !== addr[0]) return false;
  const width = net[0] === 4 ? 32 : 128;
  const bits = Number(bitsText);
  if (!Number.isInteger(bits) || bits < 0 || bits > width) return false;
  const shift = BigInt(width - bits);
  return (addr[1] >> shift) === (net[1] >> shift);
}

function matches(match, host) {
  if (!host) return false;
  if (String(match).includes("/")) return inNetwork(host, String(match));
  const p = normalPattern(match);
  if (!p) return false;
  return host === p.host || (p.wild && host.endsWith(`.${p.host}`));
}

// Every rule that covers the page at `url` (a Set; several may apply).
export function rulesFor(url, sites) {
  const host = hostOf(url);
  const found = new Set();
  if (!host) return found;
  for (const s of sites || []) if (s && RULES.includes(s.rule) && matches(s.match, host)) found.add(s.rule);
  return found;
}
