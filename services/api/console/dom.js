/* Building the console's elements: tables, SVG bar charts and number formats; data only as text, never as HTML. */

export const fmtTime = (iso) => (iso ? String(iso).replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, "") : "");
export const fmtNumber = (n) => (n === null || n === undefined ? "" : Number(n).toLocaleString("en"));
export const fmtSeconds = (s) => (s === null || s === undefined ? "" : `${Number(s).toFixed(s < 10 ? 2 : 1)} s`);

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

/** Fill a table: columns [{key, label, num}], rows as objects (or arrays indexed by position). */
export function fillTable(table, columns, rows) {
  const head = table.tHead;
  const body = table.tBodies[0];
  head.replaceChildren();
  body.replaceChildren();
  const tr = el("tr");
  for (const c of columns) tr.append(el("th", { scope: "col", class: c.num ? "num" : "" }, c.label));
  head.append(tr);
  for (const row of rows) {
    const line = el("tr");
    columns.forEach((c, i) => {
      const value = Array.isArray(row) ? row[i] : row[c.key];
      const shown = value !== null && typeof value === "object" ? JSON.stringify(value) : value;
      line.append(el("td", { class: c.num ? "num" : "" }, shown));
    });
    body.append(line);
  }
}

/**
 * A horizontal bar chart in a <figure>: items [{label, count}], bars scaled to the largest count.
 * Drawn with SVG attributes (the policy allows no inline style); the values are also in aria-description.
 */
export function barChart(id, title, items, bad = false) {
  const figure = el("figure", { id });
  const captionId = `${id}-title`;
  figure.append(el("figcaption", { id: captionId }, title));
  const width = 520;
  const rowHeight = 22;
  const labelWidth = 200;
  const countWidth = 50;
  const height = Math.max(rowHeight, rowHeight * items.length) + 4;
  const max = Math.max(1, ...items.map((i) => i.count));
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
    const label = item.label.length > 28 ? `${item.label.slice(0, 27)}…` : item.label;
    chart.append(svg("text", { x: labelWidth - 6, y: y + 15, "text-anchor": "end" }, label));
    const barWidth = item.count ? Math.max(2, Math.round(((width - labelWidth - countWidth) * item.count) / max)) : 0;
    const bar = svg("rect", { class: "bar", x: labelWidth, y: y + 3, width: barWidth, height: rowHeight - 6 });
    bar.append(svg("title", {}, `${item.label}: ${item.count}`));
    chart.append(bar);
    chart.append(svg("text", { class: "count", x: labelWidth + barWidth + 4, y: y + 15 }, fmtNumber(item.count)));
  });
  figure.append(chart);
  return figure;
}
