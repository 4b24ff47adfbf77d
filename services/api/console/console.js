/* ETL users console: the panels (runs, records, quality, charts, run now, SQL) and their wiring. */

import { api, forgetToken, keepToken, token, whenUnauthorized } from "./api.js";
import { barChart, el, fillTable, fmtNumber, fmtSeconds, fmtTime } from "./dom.js";

const FINAL = new Set(["succeeded", "failed", "upload_pending"]);
const RUNS_PAGE = 10;
const RECORDS_PAGE = 20;
const POLL_MS = 1000;
// How long "run now" waits for the extractor to pick the command up before saying so.
const START_WAIT_MS = 120000;
const COLUMNS = {
  processed_users: ["user_id", "first_name", "last_name", "email", "age", "gender", "department", "department_code", "title"],
  invalid_users: ["user_id", "first_name", "last_name", "email", "age", "department", "error_reason"],
  raw_users: ["user_id", "first_name", "last_name", "email", "age", "gender", "department"],
};
const LABELS = {
  user_id: "User id", first_name: "First name", last_name: "Last name", email: "E-mail", age: "Age",
  gender: "Gender", department: "Department", department_code: "Code", title: "Title", error_reason: "Why invalid",
};
const NUMERIC = new Set(["user_id", "age", "id"]);
const TABLE_NAMES = { processed_users: "Processed", invalid_users: "Invalid", raw_users: "Raw" };

const $ = (id) => document.getElementById(id);
const state = { runsOffset: 0, run: "", table: "processed_users", q: "", recordsOffset: 0, following: false };
// Each panel drops answers to requests older than its latest one (the run can change meanwhile).
const generation = { records: 0, quality: 0, summary: 0, runs: 0 };

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setText(id, text) {
  $(id).textContent = text || "";
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
  state.following = false;
  showSignedIn(false);
  setText("sign-in-error", message);
  $("token").value = "";
  $("token").focus();
}

async function signIn(candidate) {
  keepToken(candidate);
  try {
    await api("etl_runs?limit=1", { signingIn: true });
  } catch (err) {
    forgetToken();
    setText("sign-in-error", err.status === 401 ? "The API refused this token." : err.message);
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

// ---- runs ----------------------------------------------------------------------------------

async function loadRuns() {
  const gen = ++generation.runs;
  setText("runs-error", "");
  let page;
  try {
    page = await api(`etl_runs?limit=${RUNS_PAGE}&offset=${state.runsOffset}`);
  } catch (err) {
    setText("runs-error", `Runs could not be loaded: ${err.message}`);
    return;
  }
  if (gen !== generation.runs) return;
  const body = $("runs-table").tBodies[0];
  body.replaceChildren();
  const cells = new Map();
  for (const run of page.data) {
    const tr = el("tr", { "data-run-id": run.run_id });
    const warnings = Array.isArray(run.warnings) ? run.warnings.join("; ") : run.warnings || run.error || "";
    const values = [
      [run.id, "num"],
      [run.run_id, ""],
      [run.status, `status-${run.status}`],
      [run.trigger || "", ""],
      [fmtTime(run.started_at), ""],
      [FINAL.has(run.status) ? "" : "running", "num duration"],
      [fmtNumber(run.raw_count), "num"],
      [fmtNumber(run.valid_count), "num"],
      [fmtNumber(run.invalid_count), "num"],
      ["", "num dead"],
      [warnings, "warnings"],
    ];
    for (const [value, cls] of values) tr.append(el("td", { class: cls }, value));
    cells.set(run.id, tr);
    body.append(tr);
  }
  if (!page.data.length) {
    const empty = el("tr");
    empty.append(el("td", { colspan: 11 }, "No runs yet."));
    body.append(empty);
  }
  const first = page.data.length ? state.runsOffset + 1 : 0;
  setText("runs-range", `${first}–${state.runsOffset + page.data.length} of ${page.total}`);
  $("runs-prev").disabled = state.runsOffset === 0;
  $("runs-next").disabled = state.runsOffset + RUNS_PAGE >= page.total;
  // Duration and dead letters are in the run's own answer (the latter asks Redis).
  await Promise.all(
    page.data.map(async (run) => {
      try {
        const detail = (await api(`etl_runs/${run.id}`)).data;
        const tr = cells.get(run.id);
        if (detail.duration_s !== null) tr.querySelector(".duration").textContent = fmtSeconds(detail.duration_s);
        tr.querySelector(".dead").textContent = detail.dead_letters === null ? "unknown" : fmtNumber(detail.dead_letters);
      } catch (err) {
        setText("runs-error", `Run ${run.run_id}: ${err.message}`);
      }
    }),
  );
}

async function loadRunChoices() {
  let runs;
  try {
    runs = (await api("etl_runs?limit=200")).data;
  } catch (err) {
    setText("runs-error", `Runs could not be loaded: ${err.message}`);
    return;
  }
  const select = $("run-select");
  const keep = state.run || (runs[0] ? runs[0].run_id : "");
  select.replaceChildren(el("option", { value: "" }, "All runs"));
  for (const run of runs) {
    select.append(el("option", { value: run.run_id }, `${run.run_id} · ${run.status} · ${run.valid_count} valid`));
  }
  select.value = runs.some((r) => r.run_id === keep) ? keep : "";
  state.run = select.value;
}

// ---- the selected run's panels -------------------------------------------------------------

async function loadSummary() {
  const gen = ++generation.summary;
  const box = $("summary-charts");
  let summary;
  try {
    summary = (await api(state.run ? `summary?run_id=${encodeURIComponent(state.run)}` : "summary")).data;
  } catch (err) {
    if (gen !== generation.summary) return;
    box.replaceChildren();
    setText("charts-message", `The charts could not be loaded: ${err.message}`);
    return;
  }
  if (gen !== generation.summary) return;
  const which = state.run ? "" : ` (latest run with data: ${summary.run_id || "none"})`;
  setText("charts-message", `${fmtNumber(summary.total)} valid users${which}.`);
  box.replaceChildren(
    barChart(
      "chart-departments",
      "Users by department",
      summary.by_department.map((d) => ({ label: d.department || d.department_code || "unknown", count: d.count })),
    ),
    barChart("chart-age", "Users by age band", summary.by_age_band.map((b) => ({ label: b.band, count: b.count }))),
  );
}

async function loadQuality() {
  const gen = ++generation.quality;
  const figures = $("quality-figures");
  const charts = $("quality-charts");
  figures.replaceChildren();
  charts.replaceChildren();
  if (!state.run) {
    setText("quality-message", "Choose one run for its quality report.");
    return;
  }
  let report;
  try {
    report = (await api(`etl_runs/${encodeURIComponent(state.run)}/quality`)).data;
  } catch (err) {
    if (gen !== generation.quality) return;
    // 404: no such report (or an API without the route yet); 409: the run is not loaded yet.
    const none = err.status === 404 || err.status === 409;
    setText("quality-message", none ? "No quality report for this run." : `The quality report failed: ${err.message}`);
    return;
  }
  if (gen !== generation.quality) return;
  setText("quality-message", `Quality report of run ${report.run_id}.`);
  const pct = (x) => (x === null || x === undefined ? "" : `${(100 * x).toFixed(2)} %`);
  const rows = [
    ["Records", fmtNumber(report.records)],
    ["Valid", fmtNumber(report.valid)],
    ["Invalid", fmtNumber(report.invalid)],
    ["Invalid rate", pct(report.invalid_rate)],
  ];
  if (report.age) rows.push(["Age min / median / max", `${report.age.min} / ${report.age.median} / ${report.age.max}`]);
  if (report.previous) {
    const change = report.previous.invalid_rate_change;
    const points = `${change >= 0 ? "+" : ""}${(100 * change).toFixed(2)} points`;
    rows.push([`Invalid rate vs ${report.previous.run_id}`, change === null || change === undefined ? "" : points]);
  }
  for (const [term, value] of rows) {
    const div = el("div");
    div.append(el("dt", {}, term), el("dd", {}, value));
    figures.append(div);
  }
  const rules = Object.entries(report.rules || {}).map(([label, count]) => ({ label, count }));
  charts.append(barChart("chart-rules", "Invalid records by rule", rules, true));
  if (report.age && report.age.bands) {
    const bands = Object.entries(report.age.bands).map(([label, count]) => ({ label, count }));
    charts.append(barChart("chart-quality-age", "Age bands (report)", bands));
  }
  if (report.schema) charts.append(schemaSection(report.schema));
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
  const gen = ++generation.records;
  setText("records-error", "");
  const params = new URLSearchParams({ limit: RECORDS_PAGE, offset: state.recordsOffset });
  if (state.run) params.set("run_id", state.run);
  if (state.q) params.set("q", state.q);
  let page;
  try {
    page = (await api(`data/${state.table}?${params}`)).data;
  } catch (err) {
    if (gen !== generation.records) return;
    setText("records-error", `Records could not be loaded: ${err.message}`);
    return;
  }
  if (gen !== generation.records) return;
  const keys = COLUMNS[state.table];
  const columns = keys.map((key) => ({ key, label: LABELS[key], num: NUMERIC.has(key) }));
  fillTable($("records-table"), columns, page.items);
  const table = $("records-table");
  table.dataset.table = state.table;
  table.dataset.run = state.run;
  const scope = state.run ? `run ${state.run}` : "all runs";
  setText("records-caption", `${TABLE_NAMES[state.table]} records of ${scope}${state.q ? `, matching “${state.q}”` : ""}`);
  const first = page.items.length ? state.recordsOffset + 1 : 0;
  setText("records-range", `${first}–${state.recordsOffset + page.items.length} of ${fmtNumber(page.total)}`);
  $("records-prev").disabled = state.recordsOffset === 0;
  $("records-next").disabled = state.recordsOffset + RECORDS_PAGE >= page.total;
}

async function showRun() {
  await Promise.all([loadQuality(), loadSummary(), loadRecords()]);
}

async function refreshAll() {
  await Promise.all([loadRuns(), loadRunChoices()]);
  await showRun();
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
    progress("Asking the extractor for a run…", 0, 0);
    try {
      await api("etl_runs", { method: "POST" });
      progress("Requested; waiting for the extractor to start the run…", 0, 0);
    } catch (err) {
      if (err.status !== 409) throw err;
      progress("A run is already going; following it…", 0, 0);
      before -= 1; // the going run is the newest one
    }
    const run = await waitForStart(before);
    if (run) await follow(run);
  } catch (err) {
    setText("runs-error", `Run now failed: ${err.message}`);
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
      state.run = detail.run_id;
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
  setText("sql-error", "");
  setText("sql-info", "Running…");
  const table = $("sql-table");
  try {
    const result = (await api("query_sql", { method: "POST", body: { query: $("sql-query").value } })).data;
    fillTable(table, result.columns.map((c) => ({ key: c, label: c })), result.rows);
    const cut = result.truncated ? " (cut at the console's limit)" : "";
    setText("sql-info", `${fmtNumber(result.rows.length)} row(s) in ${result.elapsed_ms} ms${cut}.`);
  } catch (err) {
    fillTable(table, [], []);
    setText("sql-info", "");
    setText("sql-error", `The query failed: ${err.message}`);
  }
}

// ---- wiring --------------------------------------------------------------------------------

// The previous/next buttons "<name>-prev" and "<name>-next" move state[key] by one page, then load.
function pager(name, key, size, load) {
  $(`${name}-prev`).addEventListener("click", () => {
    state[key] = Math.max(0, state[key] - size);
    load();
  });
  $(`${name}-next`).addEventListener("click", () => {
    state[key] += size;
    load();
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
  pager("runs", "runsOffset", RUNS_PAGE, loadRuns);
  $("run-select").addEventListener("change", (event) => {
    state.run = event.target.value;
    state.recordsOffset = 0;
    showRun();
  });
  $("records-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.q = $("records-q").value.trim();
    state.recordsOffset = 0;
    loadRecords();
  });
  for (const radio of document.querySelectorAll("input[name=table]")) {
    radio.addEventListener("change", () => {
      state.table = radio.value;
      state.recordsOffset = 0;
      loadRecords();
    });
  }
  pager("records", "recordsOffset", RECORDS_PAGE, loadRecords);
  $("sql-form").addEventListener("submit", runSql);
  $("sql-query").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("sql-form").requestSubmit();
  });
}

async function start() {
  whenUnauthorized(() => signOut("The API refused the token; sign in again."));
  wire();
  // /ui/#token=... signs in (the link `make demo` prints); the token then leaves the address bar.
  // Read by hand, not with URLSearchParams, so a "+" in a token stays a "+".
  const match = /(?:^|&)token=([^&]*)/.exec(location.hash.slice(1));
  let fromLink = match ? match[1] : "";
  try {
    fromLink = decodeURIComponent(fromLink);
  } catch {
    // not percent-encoded: taken as it is
  }
  if (match) history.replaceState(null, "", location.pathname + location.search);
  const candidate = fromLink || token();
  if (candidate && (await signIn(candidate))) return;
  showSignedIn(false);
  $("token").focus();
}

start();
