/* Building the console's elements: tables, SVG charts and number formats; data only as text, never as HTML. */

export const fmtTime = (iso) => (iso ? String(iso).replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, "") : "");
export const fmtNumber = (n) => (n === null || n === undefined ? "" : Number(n).toLocaleString("en"));
export const fmtSeconds = (s) => (s === null || s === undefined ? "" : `${Number(s).toFixed(s < 10 ? 2 : 1)} s`);
export const fmtPercent = (x, digits = 1) => (x === null || x === undefined ? "" : `${(100 * x).toFixed(digits)} %`);
export const fmtChange = (n) => (n === null || n === undefined ? "" : n > 0 ? `+${fmtNumber(n)}` : n < 0 ? `−${fmtNumber(-n)}` : "0");

/** An HTML element with attributes and text content. */
export function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

/**
 * Fill a table: columns [{key, label, num, sortable}], rows as objects (or arrays indexed by position).
 * options.sort {key, descending} marks the sorted column (aria-sort); options.onSort(key) makes every
 * sortable header a button; options.action {label, name(row), run(row)} adds a last column of buttons.
 */
export function fillTable(table, columns, rows, options = {}) {
  const head = table.tHead;
  const body = table.tBodies[0];
  // A sort header used from the keyboard is rebuilt below: the focus moves to its successor, not to the page.
  const focused = head.contains(document.activeElement) ? document.activeElement.dataset.key : undefined;
  head.replaceChildren();
  body.replaceChildren();
  const tr = el("tr");
  for (const c of columns) {
    const th = el("th", { scope: "col", class: c.num ? "num" : "" });
    const sorted = options.sort && options.sort.key === c.key;
    if (sorted) th.setAttribute("aria-sort", options.sort.descending ? "descending" : "ascending");
    if (c.sortable && options.onSort) {
      const arrow = sorted ? (options.sort.descending ? " ↓" : " ↑") : "";
      const button = el("button", { type: "button", class: "sort", "data-key": c.key }, `${c.label}${arrow}`);
      button.addEventListener("click", () => options.onSort(c.key));
      th.append(button);
    } else {
      th.textContent = c.label;
    }
    tr.append(th);
  }
  if (options.action) tr.append(el("th", { scope: "col" }, options.action.label));
  head.append(tr);
  if (focused !== undefined) tr.querySelector(`button[data-key="${CSS.escape(focused)}"]`)?.focus();
  for (const row of rows) {
    const line = el("tr");
    columns.forEach((c, i) => {
      const value = Array.isArray(row) ? row[i] : row[c.key];
      const shown = value !== null && typeof value === "object" ? JSON.stringify(value) : value;
      line.append(el("td", { class: c.num ? "num" : "" }, shown));
    });
    if (options.action) {
      const cell = el("td");
      const button = el("button", { type: "button", class: "link", "aria-label": options.action.name(row) }, "Show");
      button.addEventListener("click", () => options.action.run(row, button));
      cell.append(button);
      line.append(cell);
    }
    body.append(line);
  }
}

/** A <figure> with its caption, and the caption's id (the chart's accessible name). */
function captioned(id, title, attrs = {}) {
  const figure = el("figure", { id, ...attrs });
  const captionId = `${id}-title`;
  figure.append(el("figcaption", { id: captionId }, title));
  return [figure, captionId];
}

/**
 * A horizontal bar chart in a <figure>: items [{label, count}] in the order given, bars scaled to the
 * largest count, each with its count and its share of the total. Drawn with SVG attributes (the
 * policy allows no inline style); the values are also in aria-description.
 */
export function barChart(id, title, items, bad = false) {
  const [figure, captionId] = captioned(id, title);
  const width = 440;
  const rowHeight = 22;
  const labelWidth = 190;
  const countWidth = 92;
  const height = Math.max(rowHeight, rowHeight * items.length) + 4;
  const max = Math.max(1, ...items.map((i) => i.count));
  const total = items.reduce((sum, i) => sum + i.count, 0);
  const chart = svg("svg", {
    class: bad ? "chart bad" : "chart",
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-labelledby": captionId,
    "aria-description": items.map((i) => `${i.label}: ${i.count}`).join(", "),
  });
  if (!items.length) chart.append(svg("text", { x: 0, y: 15 }, "nothing to show"));
  items.forEach((item, i) => {
    const y = i * rowHeight;
    const label = item.label.length > 26 ? `${item.label.slice(0, 25)}…` : item.label;
    chart.append(svg("text", { x: labelWidth - 6, y: y + 15, "text-anchor": "end" }, label));
    const barWidth = item.count ? Math.max(2, Math.round(((width - labelWidth - countWidth) * item.count) / max)) : 0;
    const share = total ? item.count / total : 0;
    const bar = svg("rect", { class: "bar", x: labelWidth, y: y + 3, width: barWidth, height: rowHeight - 6 });
    bar.append(svg("title", {}, `${item.label}: ${item.count} (${fmtPercent(share)})`));
    chart.append(bar);
    const text = `${fmtNumber(item.count)} · ${fmtPercent(share, share < 0.1 ? 1 : 0)}`;
    chart.append(svg("text", { class: "count", x: labelWidth + barWidth + 4, y: y + 15 }, text));
  });
  figure.append(chart);
  return figure;
}

/**
 * Runs over time, oldest on the left: valid and invalid counts stacked, the invalid rate as a line
 * (right axis), and each run's duration below. runs [{run_id, valid, invalid, duration_s}]; every
 * run's figures are on its <g class="run"> (data-*) and in its tooltip.
 */
export function runsChart(id, title, runs) {
  const [figure, captionId] = captioned(id, title, { class: "wide" });
  const width = 760;
  const top = 10;
  const countsHeight = 150;
  const gap = 34;
  const durationHeight = 60;
  const left = 56;
  const right = 56;
  const height = top + countsHeight + gap + durationHeight + 22;
  const chart = svg("svg", {
    class: "chart runs",
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-labelledby": captionId,
    "aria-description": runs
      .map((r) => `${r.run_id}: ${r.valid} valid, ${r.invalid} invalid, ${fmtPercent(r.rate)} invalid, ${fmtSeconds(r.duration_s) || "no duration"}`)
      .join("; "),
  });
  const plot = width - left - right;
  const step = plot / Math.max(1, runs.length);
  const barWidth = Math.max(3, Math.min(36, step * 0.7));
  const maxCount = Math.max(1, ...runs.map((r) => r.valid + r.invalid));
  const maxRate = Math.max(0.01, ...runs.map((r) => r.rate || 0));
  const maxDuration = Math.max(0.01, ...runs.map((r) => r.duration_s || 0));
  const countsBottom = top + countsHeight;
  const durationTop = countsBottom + gap;
  const durationBottom = durationTop + durationHeight;
  // Axes and their top values: counts on the left, invalid rate on the right, duration below.
  chart.append(svg("line", { class: "axis", x1: left, y1: countsBottom, x2: width - right, y2: countsBottom }));
  chart.append(svg("line", { class: "axis", x1: left, y1: durationBottom, x2: width - right, y2: durationBottom }));
  chart.append(svg("text", { x: left - 4, y: top + 10, "text-anchor": "end" }, fmtNumber(maxCount)));
  chart.append(svg("text", { x: left - 4, y: countsBottom, "text-anchor": "end" }, "0"));
  chart.append(svg("text", { class: "rate-label", x: width - right + 4, y: top + 10 }, fmtPercent(maxRate)));
  chart.append(svg("text", { class: "rate-label", x: width - right + 4, y: countsBottom }, "0 %"));
  chart.append(svg("text", { x: left, y: durationTop - 6 }, `Duration (longest ${fmtSeconds(maxDuration)})`));
  chart.append(svg("text", { x: left - 4, y: durationBottom, "text-anchor": "end" }, "0 s"));
  if (!runs.length) chart.append(svg("text", { x: left + 8, y: top + 40 }, "no runs yet"));
  const points = [];
  runs.forEach((r, i) => {
    const x = left + i * step + (step - barWidth) / 2;
    const g = svg("g", {
      class: "run",
      "data-run-id": r.run_id,
      "data-valid": r.valid,
      "data-invalid": r.invalid,
      "data-rate": r.rate === null ? "" : r.rate,
      "data-duration": r.duration_s === null ? "" : r.duration_s,
    });
    const validHeight = (countsHeight * r.valid) / maxCount;
    const invalidHeight = (countsHeight * r.invalid) / maxCount;
    g.append(svg("rect", { class: "valid", x, y: countsBottom - validHeight, width: barWidth, height: validHeight }));
    g.append(
      svg("rect", {
        class: "invalid",
        x,
        y: countsBottom - validHeight - invalidHeight,
        width: barWidth,
        height: invalidHeight,
      }),
    );
    const d = r.duration_s || 0;
    const durationBar = (durationHeight * d) / maxDuration;
    g.append(svg("rect", { class: "duration", x, y: durationBottom - durationBar, width: barWidth, height: durationBar }));
    g.append(
      svg(
        "title",
        {},
        `${r.run_id}: ${fmtNumber(r.valid)} valid, ${fmtNumber(r.invalid)} invalid (${fmtPercent(r.rate)}), ${fmtSeconds(r.duration_s) || "running"}`,
      ),
    );
    chart.append(g);
    if (r.rate !== null) points.push([x + barWidth / 2, countsBottom - (countsHeight * r.rate) / maxRate]);
  });
  if (points.length) {
    chart.append(svg("polyline", { class: "rate", points: points.map((p) => p.join(",")).join(" ") }));
    for (const [cx, cy] of points) chart.append(svg("circle", { class: "rate", cx, cy, r: 3 }));
  }
  if (runs.length) {
    const first = runs[0].run_id;
    const last = runs[runs.length - 1].run_id;
    chart.append(svg("text", { x: left, y: height - 4 }, first.slice(0, 15)));
    chart.append(svg("text", { x: width - right, y: height - 4, "text-anchor": "end" }, last.slice(0, 15)));
  }
  figure.append(chart);
  const legend = el("p", { class: "legend" });
  for (const [cls, text] of [["valid", "valid"], ["invalid", "invalid"], ["rate", "invalid rate (right axis)"], ["duration", "duration"]]) {
    const key = el("span", { class: `key ${cls}` });
    legend.append(key, el("span", {}, text));
  }
  figure.append(legend);
  return figure;
}
