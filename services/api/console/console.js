/* ETL users console: the panels (runs, quality, charts, records, run now, SQL), the view in the URL, and their wiring. */

import { api, forgetToken, isAbort, keepToken, request, token, whenUnauthorized } from "./api.js";
import {
  barChart,
  el,
  fillTable,
  fmtChange,
  fmtNumber,
  fmtPercent,
  fmtSeconds,
  fmtTime,
  runsChart,
} from "./dom.js";

const FINAL = new Set(["succeeded", "failed", "upload_pending"]);
const RUNS_PAGE = 10;
const RUNS_IN_CHART = 30;
const RECORDS_PAGE = 20;
const POLL_MS = 1000;
// How long "run now" waits for the extractor to pick the command up before saying so.
const START_WAIT_MS = 120000;
const COLUMNS = {
  processed_users: ["user_id", "first_name", "last_name", "email", "age", "gender", "department", "department_code", "title"],
  invalid_users: ["user_id", "first_name", "last_name", "email", "age", "department", "error_reason"],
  raw_users: ["user_id", "first_name", "last_name", "email", "age", "gender", "department"],
};
// The API sorts by every typed column it shows here but the reason (GET /data/{table}'s `sort`).
const UNSORTABLE = new Set(["error_reason"]);
const LABELS = {
  user_id: "User id", first_name: "First name", last_name: "Last name", email: "E-mail", age: "Age",
  gender: "Gender", department: "Department", department_code: "Code", title: "Title", error_reason: "Why invalid",
};
const NUMERIC = new Set(["user_id", "age", "id"]);
const TABLE_NAMES = { processed_users: "Processed", invalid_users: "Invalid", raw_users: "Raw" };
const ALL_RUNS = "all"; // the URL's run=all: every run's records
const MAX_OFFSET = 10000000; // the API's largest offset (GET /etl_runs and GET /data/{table})
// The department filter takes at most this many characters, none a control character (GET /data/{table}).
const DEPARTMENT_MAX = 1000;
const filterable = (name) => [...name].length <= DEPARTMENT_MAX && !/[\u0000-\u001f\u007f]/.test(name);

const $ = (id) => document.getElementById(id);
// The view: what the URL holds (?run=&table=&q=&department=&sort=&order=&page=&runs=), pages from 0.
// run: a run_id, "" for all runs, null until the newest run is known.
const view = { run: null, table: "processed_users", q: "", department: "", sort: "source", order: "asc", page: 0, runsPage: 0 };
const state = { following: false };

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setText(id, text) {
  $(id).textContent = text || "";
}

// ---- each panel's requests: a newer load cancels the older one ----------------------------

const controllers = new Map();

/** The signal of a new load of `panel`, aborting the panel's load still under way. */
function begin(panel) {
  if (controllers.has(panel)) controllers.get(panel).abort();
  const controller = new AbortController();
  controllers.set(panel, controller);
  return controller.signal;
}

function abortAll() {
  for (const controller of controllers.values()) controller.abort();
  controllers.clear();
}

// ---- the view in the URL -------------------------------------------------------------------

function readUrl() {
  const params = new URLSearchParams(location.search);
  const run = params.get("run");
  view.run = run === null ? null : run === ALL_RUNS ? "" : run;
  view.table = COLUMNS[params.get("table")] ? params.get("table") : "processed_users";
  view.q = params.get("q") || "";
  view.department = params.get("department") || "";
  const sort = params.get("sort");
  view.sort = sort && COLUMNS[view.table].includes(sort) && !UNSORTABLE.has(sort) ? sort : "source";
  view.order = params.get("order") === "desc" ? "desc" : "asc";
  // A page past the API's largest offset is past the end of any table: the last page is shown instead.
  const page = (name, size) => Math.min(Math.floor(MAX_OFFSET / size), Math.max(0, (Number.parseInt(params.get(name), 10) || 1) - 1));
  view.page = page("page", RECORDS_PAGE);
  view.runsPage = page("runs", RUNS_PAGE);
}

function urlOf() {
  const params = new URLSearchParams();
  if (view.run !== null) params.set("run", view.run === "" ? ALL_RUNS : view.run);
  if (view.table !== "processed_users") params.set("table", view.table);
  if (view.q) params.set("q", view.q);
  if (view.department) params.set("department", view.department);
  if (view.sort !== "source") params.set("sort", view.sort);
  if (view.order !== "asc") params.set("order", view.order);
  if (view.page) params.set("page", String(view.page + 1));
  if (view.runsPage) params.set("runs", String(view.runsPage + 1));
  const search = params.toString();
  return location.pathname + (search ? `?${search}` : "");
}

/** Keep the view in the address bar: a new history entry for a person's step, else the same entry updated. */
function writeUrl(push) {
  const url = urlOf();
  if (url === location.pathname + location.search) return;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

/** The form controls as the view says (after a reload, back or a shared link). */
function showView() {
  for (const radio of document.querySelectorAll("input[name=table]")) radio.checked = radio.value === view.table;
  $("records-q").value = view.q;
  const select = $("records-department");
  if (view.department && ![...select.options].some((o) => o.value === view.department)) {
    select.append(el("option", { value: view.department }, view.department));
  }
  select.value = view.department;
  if (view.run !== null) $("run-select").value = view.run;
}

// ---- sign-in -------------------------------------------------------------------------------

function showSignedIn(signedIn) {
  $("sign-in").hidden = signedIn;
  $("main").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  $("whoami").hidden = !signedIn;
}

function signOut(message) {
  forgetToken();
  abortAll();
  state.following = false;
  showSignedIn(false);
  setText("sign-in-error", message);
  $("token").value = "";
  $("token").focus();
}

async function signIn(candidate) {
  abortAll();
  keepToken(candidate);
  try {
    await api("etl_runs?limit=1", { signingIn: true });
  } catch (err) {
    forgetToken();
    setText("sign-in-error", err.status === 401 ? "The API refused this token; check ETL_API_TOKEN and try again." : err.message);
    showSignedIn(false);
    return false;
  }
  setText("sign-in-error", "");
  showSignedIn(true);
  if (!$("sql-query").value) {
    $("sql-query").value =
      "SELECT department_code, count(*) AS users FROM processed_users\nGROUP BY department_code ORDER BY users DESC";
  }
  await refreshAll();
  return true;
}

/** The token of a /ui/#token=... link (the one `make demo` prints), taken out of the address bar; "" when none. */
function tokenFromLink() {
  // Read by hand, not with URLSearchParams, so a "+" in a token stays a "+".
  const match = /(?:^|&)token=([^&]*)/.exec(location.hash.slice(1));
  if (!match) return "";
  history.replaceState(null, "", location.pathname + location.search);
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return match[1]; // not percent-encoded: taken as it is
  }
}

// ---- runs ----------------------------------------------------------------------------------

const durationOf = (run) =>
  run.started_at && run.finished_at ? (Date.parse(run.finished_at) - Date.parse(run.started_at)) / 1000 : null;

async function loadRuns() {
  const signal = begin("runs");
  setText("runs-error", "");
  let page;
  try {
    page = await api(`etl_runs?limit=${RUNS_PAGE}&offset=${view.runsPage * RUNS_PAGE}`, { signal });
  } catch (err) {
    if (!isAbort(err)) setText("runs-error", `Runs could not be loaded. ${err.message}`);
    return;
  }
  if (signal.aborted) return;
  if (pastTheEnd(page.data.length, page.total, RUNS_PAGE, "runsPage")) return loadRuns();
  const offset = view.runsPage * RUNS_PAGE;
  const body = $("runs-table").tBodies[0];
  body.replaceChildren();
  const cells = new Map();
  for (const run of page.data) {
    const tr = el("tr", { "data-run-id": run.run_id });
    const values = [
      [run.id, "num optional"],
      [run.run_id, "run-id"],
      [run.status, `status-${run.status}`],
      [run.trigger || "", "optional"],
      [fmtTime(run.started_at), "nowrap"],
      [FINAL.has(run.status) ? "" : "running", "num duration"],
      [fmtNumber(run.raw_count), "num"],
      [fmtNumber(run.valid_count), "num"],
      [fmtNumber(run.invalid_count), "num"],
      ["", "num dead"],
      [run.error || "", "warnings"],
    ];
    for (const [value, cls] of values) tr.append(el("td", { class: cls }, value));
    // A run id may break after its underscores (date_time_suffix) in a narrow window, nowhere else.
    const id = tr.querySelector(".run-id");
    const parts = run.run_id.split("_");
    id.replaceChildren(...parts.flatMap((part, i) => (i < parts.length - 1 ? [`${part}_`, el("wbr")] : [part])));
    cells.set(run.id, tr);
    body.append(tr);
  }
  if (!page.data.length) {
    const empty = el("tr");
    empty.append(el("td", { colspan: 11 }, "No runs yet: start one with “Run now”."));
    body.append(empty);
  }
  const first = page.data.length ? offset + 1 : 0;
  setText("runs-range", `${first}–${offset + page.data.length} of ${page.total}`);
  $("runs-prev").disabled = offset === 0;
  $("runs-next").disabled = offset + RUNS_PAGE >= page.total;
  // Duration, dead letters and warnings are in the run's own answer (dead letters ask Redis).
  await Promise.all(
    page.data.map(async (run) => {
      let detail;
      try {
        detail = (await api(`etl_runs/${run.id}`, { signal })).data;
      } catch (err) {
        if (!isAbort(err)) setText("runs-error", `Run ${run.run_id} could not be loaded. ${err.message}`);
        return;
      }
      if (signal.aborted) return;
      const tr = cells.get(run.id);
      if (detail.duration_s !== null) tr.querySelector(".duration").textContent = fmtSeconds(detail.duration_s);
      tr.querySelector(".dead").textContent = detail.dead_letters === null ? "unknown" : fmtNumber(detail.dead_letters);
      const notes = [detail.error, ...(detail.warnings || [])].filter(Boolean);
      tr.querySelector(".warnings").textContent = notes.join("; ");
    }),
  );
}

async function loadRunsChart() {
  const signal = begin("runs-chart");
  let runs;
  try {
    runs = (await api(`etl_runs?limit=${RUNS_IN_CHART}`, { signal })).data;
  } catch (err) {
    if (!isAbort(err)) setText("runs-chart-message", `The runs chart could not be loaded. ${err.message}`);
    return;
  }
  if (signal.aborted) return;
  const points = runs.reverse().map((run) => {
    const records = run.valid_count + run.invalid_count;
    return {
      run_id: run.run_id,
      valid: run.valid_count,
      invalid: run.invalid_count,
      rate: records ? run.invalid_count / records : null,
      duration_s: durationOf(run),
    };
  });
  setText("runs-chart-message", runs.length ? `The latest ${runs.length} run(s), oldest on the left.` : "");
  $("runs-charts").replaceChildren(runsChart("chart-runs", "Runs over time: records, invalid rate and duration", points));
}

async function loadRunChoices() {
  const signal = begin("run-choices");
  let runs;
  try {
    runs = (await api("etl_runs?limit=200", { signal })).data;
  } catch (err) {
    if (!isAbort(err)) setText("runs-error", `Runs could not be loaded. ${err.message}`);
    return;
  }
  if (signal.aborted) return;
  const select = $("run-select");
  select.replaceChildren(el("option", { value: "" }, "All runs"));
  for (const run of runs) {
    select.append(el("option", { value: run.run_id }, `${run.run_id} · ${run.status} · ${run.valid_count} valid`));
  }
  if (view.run === null) view.run = runs[0] ? runs[0].run_id : "";
  if (view.run && !runs.some((r) => r.run_id === view.run)) {
    // A link to a run this list does not hold (older than 200 runs, or gone): kept, and said so.
    select.append(el("option", { value: view.run }, `${view.run} (not among the latest runs)`));
  }
  select.value = view.run;
  writeUrl(false);
}

// ---- the selected run's panels -------------------------------------------------------------

async function loadSummary() {
  const signal = begin("summary");
  const box = $("summary-charts");
  let summary;
  try {
    const path = view.run ? `summary?run_id=${encodeURIComponent(view.run)}` : "summary";
    summary = (await api(path, { signal })).data;
  } catch (err) {
    if (isAbort(err)) return;
    box.replaceChildren();
    setText("charts-message", `The charts could not be loaded. ${err.message}`);
    return;
  }
  if (signal.aborted) return;
  const which = view.run ? "" : ` (latest run with data: ${summary.run_id || "none"})`;
  setText("charts-message", `${fmtNumber(summary.total)} valid users${which}.`);
  const departments = summary.by_department
    .map((d) => ({ label: d.department || d.department_code || "unknown", count: d.count }))
    .sort((a, b) => b.count - a.count || a.label.localeCompare(b.label));
  box.replaceChildren(
    barChart("chart-departments", "Users by department (share of the run)", departments),
    barChart("chart-age", "Users by age band", summary.by_age_band.map((b) => ({ label: b.band, count: b.count }))),
    barChart("chart-gender", "Users by gender", summary.by_gender.map((g) => ({ label: g.gender, count: g.count }))),
    barChart("chart-device", "Users by device", summary.by_device.map((d) => ({ label: d.device, count: d.count }))),
  );
  // The department filter offers the departments of the run the API can filter on (the one chosen stays,
  // even if absent); a name with a control character or past DEPARTMENT_MAX is only in the chart.
  const select = $("records-department");
  const names = departments.map((d) => d.label).filter((name) => name !== "unknown" && filterable(name));
  if (names.join("\n") !== [...select.options].slice(1).map((o) => o.value).join("\n")) {
    select.replaceChildren(el("option", { value: "" }, "All departments"));
    for (const name of names) select.append(el("option", { value: name }, name));
  }
  showView();
}

const QUALITY_COLUMNS = [
  { key: "column", label: "Column" },
  { key: "nulls", label: "Nulls", num: true },
  { key: "nullsChange", label: "vs previous", num: true },
  { key: "blanks", label: "Blanks", num: true },
  { key: "blanksChange", label: "vs previous", num: true },
  { key: "distinct", label: "Distinct", num: true },
  { key: "distinctChange", label: "vs previous", num: true },
];

async function loadQuality() {
  const signal = begin("quality");
  const figures = $("quality-figures");
  const charts = $("quality-charts");
  figures.replaceChildren();
  charts.replaceChildren();
  $("quality-columns").hidden = true;
  setText("quality-departments", "");
  if (!view.run) {
    setText("quality-message", "Choose one run for its quality report.");
    return;
  }
  let report;
  let previous = null;
  try {
    report = (await api(`etl_runs/${encodeURIComponent(view.run)}/quality`, { signal })).data;
    if (report.previous) {
      try {
        previous = (await api(`etl_runs/${encodeURIComponent(report.previous.run_id)}/quality`, { signal })).data;
      } catch (err) {
        if (isAbort(err)) throw err;
        previous = null; // its report is gone: the changes stay blank
      }
    }
  } catch (err) {
    if (isAbort(err)) return;
    // 404: no such report (or an API without the route yet); 409: the run is not loaded yet.
    const none = err.status === 404 || err.status === 409;
    setText("quality-message", none ? "No quality report for this run." : `The quality report could not be loaded. ${err.message}`);
    return;
  }
  if (signal.aborted) return;
  setText("quality-message", `Quality report of run ${report.run_id}.`);
  const rows = [
    ["Records", fmtNumber(report.records)],
    ["Valid", fmtNumber(report.valid)],
    ["Invalid", fmtNumber(report.invalid)],
    ["Invalid rate", fmtPercent(report.invalid_rate, 2)],
  ];
  if (report.age) rows.push(["Age min / median / max", `${report.age.min} / ${report.age.median} / ${report.age.max}`]);
  if (report.previous) {
    const change = report.previous.invalid_rate_change;
    const points = `${change >= 0 ? "+" : ""}${(100 * change).toFixed(2)} points`;
    rows.push([`Invalid rate vs ${report.previous.run_id}`, change === null || change === undefined ? "" : points]);
    const moved = Object.entries(report.previous.departments_change || {}).filter(([, n]) => n);
    setText(
      "quality-departments",
      moved.length
        ? `Valid records per department vs the previous run: ${moved.map(([code, n]) => `${code} ${fmtChange(n)}`).join(", ")}.`
        : "Valid records per department: the same as the previous run.",
    );
  }
  for (const [term, value] of rows) {
    const div = el("div");
    div.append(el("dt", {}, term), el("dd", {}, value));
    figures.append(div);
  }
  const before = previous ? previous.columns || {} : {};
  const change = (column, key, value) => (before[column] ? fmtChange(value - before[column][key]) : "");
  const columns = Object.entries(report.columns || {}).map(([column, p]) => ({
    column,
    nulls: fmtNumber(p.nulls),
    nullsChange: change(column, "nulls", p.nulls),
    blanks: fmtNumber(p.blanks),
    blanksChange: change(column, "blanks", p.blanks),
    distinct: fmtNumber(p.distinct),
    distinctChange: change(column, "distinct", p.distinct),
  }));
  const against = previous ? `, and the change against run ${previous.run_id}` : " (no previous run to compare with)";
  setText("quality-columns-caption", `Nulls, blanks and distinct values per column${against}`);
  fillTable($("quality-columns"), QUALITY_COLUMNS, columns);
  $("quality-columns").hidden = !columns.length;
  const rules = Object.entries(report.rules || {}).map(([label, count]) => ({ label, count }));
  charts.append(barChart("chart-rules", "Invalid records by rule", rules, true));
  if (report.schema) charts.append(schemaSection(report.schema));
}

/** The records selection of the view as API parameters (without paging). */
function selection() {
  const params = new URLSearchParams();
  if (view.run) params.set("run_id", view.run);
  if (view.q) params.set("q", view.q);
  if (view.department) params.set("department", view.department);
  if (view.sort !== "source") params.set("sort", view.sort);
  if (view.order !== "asc") params.set("order", view.order);
  return params;
}

function showRecord(row, button) {
  setText("record-title", `Record ${row.id} (user ${row.user_id ?? "without id"}) as stored: masked, without password`);
  setText("record-json", row.record === null ? "null (the line was not JSON)" : JSON.stringify(row.record, null, 2));
  $("record-box").hidden = false;
  $("record-box").dataset.id = row.id;
  $("record-close").onclick = () => {
    $("record-box").hidden = true;
    button.focus();
  };
  $("record-json").focus();
}

// The quality report's schema part: drift against the previous succeeded run and the data contract.
function schemaSection(schema) {
  const box = el("div", { id: "quality-schema" });
  const against = schema.previous_run_id ? ` against ${schema.previous_run_id}` : " (no previous run)";
  box.append(el("h3", {}, `Schema: ${schema.fields} fields, ${schema.drift.length} changes${against}`));
  const list = el("ul");
  const words = (v) => (Array.isArray(v) ? v.join(" or ") : v === null ? "-" : `${(100 * v).toFixed(1)} % null`);
  for (const c of schema.drift) {
    list.append(el("li", {}, `${c.change}: ${c.field} (${words(c.before)} → ${words(c.after)})`));
  }
  const contract = schema.contract;
  if (contract) {
    list.append(el("li", {}, `contract ${contract.name} (${contract.policy}): ${contract.records} records broke it`));
  }
  box.append(list);
  return box;
}

async function loadRecords() {
  const signal = begin("records");
  setText("records-error", "");
  $("record-box").hidden = true;
  const params = selection();
  params.set("limit", RECORDS_PAGE);
  params.set("offset", view.page * RECORDS_PAGE);
  let page;
  try {
    page = (await api(`data/${view.table}?${params}`, { signal })).data;
  } catch (err) {
    if (!isAbort(err)) setText("records-error", `Records could not be loaded. ${err.message}`);
    return;
  }
  if (signal.aborted) return;
  if (pastTheEnd(page.items.length, page.total, RECORDS_PAGE, "page")) return loadRecords();
  const keys = COLUMNS[view.table];
  const columns = keys.map((key) => ({ key, label: LABELS[key], num: NUMERIC.has(key), sortable: !UNSORTABLE.has(key) }));
  const table = $("records-table");
  fillTable(table, columns, page.items, {
    sort: view.sort === "source" ? null : { key: view.sort, descending: view.order === "desc" },
    onSort: sortBy,
    action: { label: "Record", name: (row) => `Show record ${row.id} as JSON`, run: showRecord },
  });
  table.dataset.table = view.table;
  table.dataset.run = view.run || "";
  const scope = view.run ? `run ${view.run}` : "all runs";
  const filters = [view.q ? `matching “${view.q}”` : "", view.department ? `in ${view.department}` : ""].filter(Boolean);
  const order = view.sort === "source" ? "" : `, by ${LABELS[view.sort] || view.sort} ${view.order === "desc" ? "descending" : "ascending"}`;
  setText("records-caption", `${TABLE_NAMES[view.table]} records of ${scope}${filters.length ? `, ${filters.join(", ")}` : ""}${order}`);
  const offset = view.page * RECORDS_PAGE;
  const first = page.items.length ? offset + 1 : 0;
  setText("records-range", `${first}–${offset + page.items.length} of ${fmtNumber(page.total)}`);
  $("records-prev").disabled = offset === 0;
  $("records-next").disabled = offset + RECORDS_PAGE >= page.total;
}

/**
 * True when view[key] is a page past the last one (a shared link or a reload after the data changed, or a
 * page typed into the URL): view[key] becomes the last page, in the URL too, and the caller loads it again.
 */
function pastTheEnd(shown, total, size, key) {
  if (shown || !view[key]) return false;
  const last = Math.max(0, Math.ceil(total / size) - 1);
  if (view[key] <= last) return false;
  view[key] = last;
  writeUrl(false);
  return true;
}

function sortBy(key) {
  if (view.sort === key) view.order = view.order === "asc" ? "desc" : "asc";
  else [view.sort, view.order] = [key, "asc"];
  view.page = 0;
  navigate(loadRecords);
}

async function showRun() {
  await Promise.all([loadQuality(), loadSummary(), loadRecords()]);
}

async function refreshAll() {
  await Promise.all([loadRuns(), loadRunChoices(), loadRunsChart()]);
  showView();
  await showRun();
}

/** A person changed the view: a new history entry, then the panels it concerns. */
function navigate(load) {
  writeUrl(true);
  showView();
  return load();
}

// ---- downloads -----------------------------------------------------------------------------

async function download(format) {
  const params = selection();
  if (format === "csv") params.set("raw", "false"); // safe for spreadsheets (the default, said plainly)
  const status = $("download-status");
  delete status.dataset.file;
  setText("download-status", `Preparing the ${format.toUpperCase()} file…`);
  try {
    const response = await request(`data/${view.table}.${format}?${params}`, { accept: "*/*" });
    const blob = await response.blob();
    const disposition = response.headers.get("Content-Disposition") || "";
    const name = /filename="([^"]+)"/.exec(disposition)?.[1] || `${view.table}.${format}`;
    const link = el("a", { href: URL.createObjectURL(blob), download: name, hidden: "" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
    setText("download-status", `Downloaded ${name} (${fmtNumber(blob.size)} bytes).`);
    status.dataset.file = name;
  } catch (err) {
    setText("download-status", `The download failed. ${err.message}`);
  }
}

// ---- run now -------------------------------------------------------------------------------

function progress(text, loaded, expected) {
  $("progress-box").hidden = false;
  const bar = $("run-progress");
  if (expected) {
    bar.max = expected;
    bar.value = Math.min(loaded, expected);
  } else {
    bar.removeAttribute("value"); // indeterminate until the extractor knows the page count
  }
  setText("progress-text", text);
}

async function newestRunId() {
  const runs = (await api("etl_runs?limit=1")).data;
  return runs.length ? runs[0].id : 0;
}

async function runNow() {
  const button = $("run-now");
  button.disabled = true;
  setText("runs-error", "");
  state.following = true;
  delete $("progress-box").dataset.done;
  try {
    let before = await newestRunId();
    let going = null; // the going run's id, when the API names it (its row may not exist yet)
    progress("Asking the extractor for a run…", 0, 0);
    try {
      await api("etl_runs", { method: "POST" });
      progress("Requested; waiting for the extractor to start the run…", 0, 0);
    } catch (err) {
      if (err.status !== 409) throw err;
      // Queued: its run has no row yet, so wait for a new one; going: follow the run the API names, else the newest.
      const queued = /already queued/i.test(err.message);
      going = queued ? null : (/already going: run (\S+)/i.exec(err.message) || [])[1] || null;
      progress(queued ? "A run is already queued; waiting for the extractor to start it…" : "A run is already going; following it…", 0, 0);
      if (!queued && !going) before -= 1;
    }
    const run = going ? await waitForRow(going) : await waitForStart(before);
    if (run) await follow(run);
  } catch (err) {
    setText("runs-error", `Run now failed. ${err.message}`);
    setText("progress-text", "");
    $("progress-box").hidden = true;
  } finally {
    button.disabled = false;
    state.following = false;
  }
}

async function waitForStart(before) {
  const deadline = Date.now() + START_WAIT_MS;
  while (state.following) {
    const runs = (await api("etl_runs?limit=1")).data;
    if (runs.length && runs[0].id > before) return runs[0];
    if (Date.now() > deadline) {
      progress("The extractor has not started the run yet: is the extractor service running?", 0, 0);
      return null;
    }
    await sleep(POLL_MS);
  }
  return null;
}

async function waitForRow(runId) {
  const deadline = Date.now() + START_WAIT_MS;
  while (state.following) {
    try {
      return (await api(`etl_runs/${encodeURIComponent(runId)}`)).data;
    } catch (err) {
      if (err.status !== 404) throw err; // not recorded by the saver yet
    }
    if (Date.now() > deadline) {
      progress(`Run ${runId} has not been recorded yet: is the saver running?`, 0, 0);
      return null;
    }
    await sleep(POLL_MS);
  }
  return null;
}

async function follow(run) {
  let lastStatus = "";
  while (state.following) {
    const detail = (await api(`etl_runs/${run.id}`)).data;
    const pages = detail.pages_expected ? `, page ${detail.pages_loaded} of ${detail.pages_expected} loaded` : "";
    const counts = `${fmtNumber(detail.raw_count)} fetched, ${fmtNumber(detail.valid_count)} valid, ${fmtNumber(detail.invalid_count)} invalid`;
    if (detail.status !== lastStatus) {
      lastStatus = detail.status;
      await loadRuns();
    }
    if (FINAL.has(detail.status)) {
      const took = detail.duration_s === null ? "" : ` in ${fmtSeconds(detail.duration_s)}`;
      const error = detail.error ? ` (${detail.error})` : "";
      progress(`Run ${detail.run_id} ${detail.status}${took}: ${counts}${error}.`, 1, 1);
      [view.run, view.page, view.runsPage] = [detail.run_id, 0, 0];
      writeUrl(true);
      await refreshAll();
      $("progress-box").dataset.done = detail.status; // the run has ended and every panel shows it
      return;
    }
    progress(`Run ${detail.run_id} ${detail.status}${pages}: ${counts}.`, detail.pages_loaded, detail.pages_expected);
    await sleep(POLL_MS);
  }
}

// ---- SQL -----------------------------------------------------------------------------------

async function runSql(event) {
  event.preventDefault();
  const signal = begin("sql");
  setText("sql-error", "");
  setText("sql-info", "Running…");
  const table = $("sql-table");
  try {
    const result = (await api("query_sql", { method: "POST", body: { query: $("sql-query").value }, signal })).data;
    fillTable(table, result.columns.map((c) => ({ key: c, label: c })), result.rows);
    const cut = result.truncated ? " (cut at the console's limit)" : "";
    setText("sql-info", `${fmtNumber(result.rows.length)} row(s) in ${result.elapsed_ms} ms${cut}.`);
  } catch (err) {
    if (isAbort(err)) return;
    fillTable(table, [], []);
    setText("sql-info", "");
    setText("sql-error", err.status === 400 ? `The query was refused. ${err.message}` : `The query failed. ${err.message}`);
  }
}

// ---- wiring --------------------------------------------------------------------------------

// The previous/next buttons "<name>-prev" and "<name>-next" move view[key] by one page, then load.
function pager(name, key, load) {
  $(`${name}-prev`).addEventListener("click", () => {
    view[key] = Math.max(0, view[key] - 1);
    navigate(load);
  });
  $(`${name}-next`).addEventListener("click", () => {
    view[key] += 1;
    navigate(load);
  });
}

function wire() {
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token").value.trim());
  });
  $("sign-out").addEventListener("click", () => {
    signOut("");
    setText("notice", "Signed out.");
  });
  $("run-now").addEventListener("click", runNow);
  pager("runs", "runsPage", loadRuns);
  $("run-select").addEventListener("change", (event) => {
    [view.run, view.page] = [event.target.value, 0];
    navigate(showRun);
  });
  $("records-form").addEventListener("submit", (event) => {
    event.preventDefault();
    [view.q, view.department, view.page] = [$("records-q").value.trim(), $("records-department").value, 0];
    navigate(loadRecords);
  });
  $("records-department").addEventListener("change", () => $("records-form").requestSubmit());
  for (const radio of document.querySelectorAll("input[name=table]")) {
    radio.addEventListener("change", () => {
      view.table = radio.value;
      view.page = 0;
      if (COLUMNS[view.table].indexOf(view.sort) < 0) [view.sort, view.order] = ["source", "asc"];
      navigate(loadRecords);
    });
  }
  pager("records", "page", loadRecords);
  for (const button of document.querySelectorAll(".downloads button")) {
    button.addEventListener("click", () => download(button.dataset.format));
  }
  $("sql-form").addEventListener("submit", runSql);
  $("sql-query").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("sql-form").requestSubmit();
  });
  // Back and forward: the view of that entry, every panel redrawn (the runs list stays as it is).
  window.addEventListener("popstate", () => {
    readUrl();
    showView();
    if (!token()) return;
    loadRuns();
    showRun();
  });
  // A new sign-in link pasted into this tab: honoured at once, without a reload.
  window.addEventListener("hashchange", async () => {
    const candidate = tokenFromLink();
    if (candidate && !(await signIn(candidate))) $("token").focus();
  });
}

async function start() {
  whenUnauthorized(() => signOut("The API refused the token; sign in again."));
  readUrl();
  wire();
  const candidate = tokenFromLink() || token();
  if (candidate && (await signIn(candidate))) return;
  showSignedIn(false);
  $("token").focus();
}

start();
