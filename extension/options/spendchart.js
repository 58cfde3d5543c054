// Spend per day as a stacked bar chart in plain SVG, drawn from the host's `spend.daily`
// (local data; no chart library, nothing fetched). `spendBars` is the geometry alone, so it
// runs in node for the unit tests; `drawSpend` turns it into SVG elements. Names (providers,
// workflows) are text nodes, never markup.

import { usd } from "../lib/format.js";

const SVG = "http://www.w3.org/2000/svg";
const CHART = { width: 600, height: 170, top: 18, bottom: 22, left: 4, right: 4 };
// Colours that read on both the light and the dark card.
const PALETTE = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#14b8a6", "#ec4899", "#84cc16"];
const MIN_BAR_PX = 2; // a day that cost something never draws as nothing

// The series (providers or workflows) in order of their total, largest first, with colours.
function spendSeries(days, by) {
  const totals = new Map();
  for (const day of days) {
    for (const [name, cost] of Object.entries(day[by] || {})) totals.set(name, (totals.get(name) || 0) + cost);
  }
  return [...totals.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([name, total], i) => ({ name, total, color: PALETTE[i % PALETTE.length] }));
}

// One rect per (day, series) with spend: {date, name, cost, x, y, width, height, color}.
export function spendBars(days, by, chart = CHART) {
  const series = spendSeries(days, by);
  const color = new Map(series.map((s) => [s.name, s.color]));
  const plotH = chart.height - chart.top - chart.bottom;
  const slot = (chart.width - chart.left - chart.right) / Math.max(1, days.length);
  const width = Math.max(1, slot * 0.72);
  const max = Math.max(0, ...days.map((d) => d.total || 0));
  const bars = [];
  days.forEach((day, i) => {
    let y = chart.height - chart.bottom;
    const parts = Object.entries(day[by] || {}).filter(([, c]) => c > 0)
      .sort((a, b) => series.findIndex((s) => s.name === a[0]) - series.findIndex((s) => s.name === b[0]));
    for (const [name, cost] of parts) {
      const height = Math.max(MIN_BAR_PX, max > 0 ? (cost / max) * plotH : 0);
      y -= height;
      bars.push({ date: day.date, name, cost, x: chart.left + i * slot + (slot - width) / 2, y, width, height,
                  color: color.get(name) });
    }
  });
  return { bars, series, max };
}

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// The chart and its legend, into `container` (emptied first).
export function drawSpend(container, days, by) {
  container.textContent = "";
  const { bars, series, max } = spendBars(days, by);
  const svg = el("svg", { viewBox: `0 0 ${CHART.width} ${CHART.height}`, width: "100%", role: "img",
                          "aria-labelledby": "spend-chart-title", "data-by": by });
  const total = days.reduce((sum, d) => sum + (d.total || 0), 0);
  svg.append(el("title", { id: "spend-chart-title" },
                `Spend per day over ${days.length} days, by ${by === "by_provider" ? "provider" : "workflow"}: ${usd(total)} in all`));
  const base = CHART.height - CHART.bottom;
  svg.append(el("line", { x1: CHART.left, x2: CHART.width - CHART.right, y1: base, y2: base, class: "axis" }));
  for (const b of bars) {
    const rect = el("rect", { x: b.x.toFixed(2), y: b.y.toFixed(2), width: b.width.toFixed(2), height: b.height.toFixed(2),
                              fill: b.color, "data-date": b.date, "data-name": b.name, "data-cost": b.cost });
    rect.append(el("title", {}, `${b.date} · ${b.name}: ${usd(b.cost)}`));
    svg.append(rect);
  }
  if (max > 0) svg.append(el("text", { x: CHART.left, y: 12, class: "tick" }, `${usd(max)} / day`));
  if (days.length) {
    const label = (i, anchor) => el("text", { x: i === 0 ? CHART.left : CHART.width - CHART.right, y: CHART.height - 6,
                                              "text-anchor": anchor, class: "tick" }, days[i].date);
    svg.append(label(0, "start"), label(days.length - 1, "end"));
  }
  container.append(svg);
  const legend = document.createElement("ul");
  legend.className = "legend";
  for (const s of series) {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = s.color;
    li.append(swatch, `${s.name} ${usd(s.total)}`);
    legend.append(li);
  }
  container.append(legend);
  return svg;
}
