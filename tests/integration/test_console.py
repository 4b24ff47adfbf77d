"""The web console in headless Chromium, behind a path-prefix reverse proxy, over real runs of the pipeline."""

import csv
import io
import json
import re
import shutil
import sqlite3
import subprocess
import time
import zipfile
from contextlib import closing
from urllib.parse import parse_qs, urlsplit

import httpx
import pyarrow.parquet as pq
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

import testbed as tb
from api.ui import FILES as CONSOLE
from dummyjson.users import make_user
from etl_common.keys import run_claim
from tests.browser import BrowserLog, PrefixProxy, chromium, downloaded, leaving_the_machine
from tests.support import Pipeline, real_users
from tests.unit.api.test_exports import HOSTILE, hostile_users, runs_as_formula, unneutralised

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Screenshots of every step; kept after the run (git ignores the folder).
OUTPUT = tb.ROOT / "test-output" / "console"
PREFIX = "etl"
DASH = "\N{EN DASH}"  # the console writes ranges with an en dash
TABLE_ROWS = """return [...document.querySelectorAll(arguments[0] + ' tbody tr')]
  .map(tr => [...tr.cells].map(td => td.textContent));"""
TABLE_HEADERS = "return [...document.querySelectorAll(arguments[0] + ' thead th')].map(th => th.textContent);"
# Every form control has a label (or is a button with text): the console is usable without a mouse or sight.
UNLABELLED = """return [...document.querySelectorAll('input, select, textarea, button')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
  .map(e => e.outerHTML);"""

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def _load(p: Pipeline, **env: str):
    """One real run through the services; its etl_runs row once it succeeded."""
    before = len(tb.runs(p.db_path))
    done = p.extract(**env)
    assert done.returncode == 0, done.stdout + done.stderr
    run = tb.wait_for_run(p.db_path, ("succeeded",), count=before + 1, logs=p.logs)
    tb.wait_for_quality(p.db_path, run["run_id"], logs=p.logs)  # the quality panel shows it
    time.sleep(1.1)  # run timestamps (and file names) have one-second resolution
    return run


class Console:
    """The page and the checks a person makes by looking at it."""

    def __init__(self, driver, log: BrowserLog) -> None:
        self.driver, self.log = driver, log

    def wait(self, condition, timeout_s: float = 30, what: str = ""):
        try:
            return WebDriverWait(self.driver, timeout_s, poll_frequency=0.1).until(lambda d: condition())
        except Exception as exc:
            self.shot("failure")
            raise AssertionError(
                f"the console did not show {what or condition} (console: {self.log.errors()})"
            ) from exc

    def find(self, css: str):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.find(css).text

    def rows(self, css: str) -> list[list[str]]:
        return self.driver.execute_script(TABLE_ROWS, css)

    def column(self, css: str, header: str) -> list[str]:
        i = self.driver.execute_script(TABLE_HEADERS, css).index(header)
        return [r[i] for r in self.rows(css)]

    def shot(self, name: str) -> None:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        # The whole page: the window's height is the page's plus the browser's own frame.
        height = self.driver.execute_script(
            "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight"
        )
        self.driver.set_window_size(1280, max(800, min(height + 20, 6000)))
        self.driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
        self.driver.save_screenshot(str(OUTPUT / f"{name}.png"))


def _unexpected_errors(log: BrowserLog, expected: list[tuple[str, int]]) -> list[dict]:
    """Console errors other than the answers the test provoked on purpose: (url part, status)."""
    return [
        e
        for e in log.errors()
        if not any(part in e["message"] and f"status of {status}" in e["message"] for part, status in expected)
    ]


def _emails(p: Pipeline, table: str, run_id: str, limit: int, offset: int = 0) -> list[str]:
    with p.db() as conn:
        rows = conn.execute(
            f"SELECT email FROM {table} WHERE run_id = ? ORDER BY page, position LIMIT ? OFFSET ?",
            (run_id, limit, offset),
        ).fetchall()
    return [r[0] or "" for r in rows]


def test_a_person_signs_in_browses_runs_charts_and_sql_and_starts_a_run(make_source, make_pipeline, tmp_path):
    """The whole console, as a person uses it, on real runs; no console error, no request off the machine."""
    first_source = make_source(208, users=real_users())
    second_source = make_source(150, bad_every=10, seed=1)  # some invalid records
    p = make_pipeline(first_source)
    p.start_workers()
    first = _load(p)
    second = _load(p, ETL_SOURCE_URL=second_source.url)
    assert second["invalid_count"] > 0
    port = tb.free_port()
    api = p.start("api", ETL_API_PORT=str(port))
    tb.wait_port(port, proc=api.popen)
    p.start("extractor")  # picks up "run now" commands
    shutil.rmtree(OUTPUT, ignore_errors=True)  # only this run's screenshots
    proxy = PrefixProxy(PREFIX, port)
    driver = chromium(tmp_path / "chromium-profile")
    log = BrowserLog(driver)
    ui = Console(driver, log)
    expected_failures: list[tuple[str, int]] = []  # answers the test provokes on purpose: (url part, status)
    try:
        # -- the page, its headers and its redirect through the prefix ---------------------------------
        page = httpx.get(f"{proxy.url}/ui", follow_redirects=True)
        assert str(page.url) == f"{proxy.url}/ui/" and page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert "<script>" not in page.text and " style=" not in page.text and "http" not in page.text.split("<body")[1]
        for f in CONSOLE.iterdir():
            served = httpx.get(f"{proxy.url}/ui/{f.name}")
            assert served.status_code == 200 and served.content == f.read_bytes(), f.name
            assert served.headers["content-security-policy"] == csp and served.headers["x-content-type-options"]

        # -- sign-in with the form: a wrong token is refused, the right one opens the console -----------
        driver.get(f"{proxy.url}/ui")
        ui.wait(lambda: ui.find("#token").is_displayed(), what="the sign-in form")
        assert driver.switch_to.active_element == ui.find("#token")  # focus starts in the form
        ui.find("#token").send_keys("not-the-token", Keys.ENTER)
        expected_failures.append(("/etl_runs?limit=1", 401))
        ui.wait(lambda: "refused" in ui.text("#sign-in-error"), what="the refusal")
        ui.find("#token").clear()
        ui.find("#token").send_keys(TOKEN, Keys.ENTER)
        ui.wait(lambda: ui.find("#main").is_displayed(), what="the console after sign-in")
        assert driver.execute_script("return sessionStorage.getItem('etl.apiToken')") == TOKEN
        ui.find("#sign-out").click()
        ui.wait(lambda: ui.find("#token").is_displayed(), what="the sign-in form after sign-out")
        assert driver.execute_script("return sessionStorage.getItem('etl.apiToken')") is None
        assert not ui.find("#main").is_displayed()

        # -- the link `make demo` prints signs in and the token leaves the address bar -----------------
        driver.get("about:blank")
        driver.get(f"{proxy.url}/ui/#token={TOKEN}")
        ui.wait(lambda: ui.find("#main").is_displayed(), what="the console opened by the token link")
        assert driver.execute_script("return location.hash") == ""

        # -- the runs, newest first, with counts, duration and dead letters ---------------------------
        ui.wait(lambda: len(ui.rows("#runs-table")) == 2 and ui.rows("#runs-table")[0][9] != "", what="two runs")
        runs = ui.rows("#runs-table")
        assert [r[1] for r in runs] == [second["run_id"], first["run_id"]]
        for row, run in zip(runs, (second, first), strict=True):
            assert row[2] == "succeeded"
            assert row[6:9] == [f"{run['raw_count']:,}", f"{run['valid_count']:,}", f"{run['invalid_count']:,}"]
            assert re.fullmatch(r"\d+\.\d+ s", row[5]) and row[9] == "0"
        ui.shot("01-runs")

        # -- the drop-down: the newest run is chosen; its processed and invalid records ----------------
        select = ui.find("#run-select")
        assert select.get_attribute("value") == second["run_id"]
        caption = f"Processed records of run {second['run_id']}"
        ui.wait(lambda: ui.text("#records-caption") == caption, what=caption)
        assert ui.text("#records-range") == f"1{DASH}20 of {second['valid_count']}"
        assert ui.column("#records-table", "E-mail") == _emails(p, "processed_users", second["run_id"], 20)
        ui.find("input[name=table][value=invalid_users]").click()
        ui.wait(lambda: ui.text("#records-caption").startswith("Invalid records"), what="the invalid records")
        assert ui.text("#records-range").endswith(f"of {second['invalid_count']}")
        with p.db() as conn:
            reasons = [
                r[0]
                for r in conn.execute(
                    "SELECT error_reason FROM invalid_users WHERE run_id = ? ORDER BY page, position LIMIT 20",
                    (second["run_id"],),
                )
            ]
        assert ui.column("#records-table", "Why invalid") == reasons and all(reasons)
        # -- the quality panel of the run: the report when the API has one, a clear message otherwise ---
        quality = httpx.get(f"http://127.0.0.1:{port}/etl_runs/{second['run_id']}/quality", headers=AUTH)
        if quality.status_code == 200:
            report = quality.json()
            ui.wait(lambda: ui.text("#quality-message") == f"Quality report of run {second['run_id']}.", what="it")
            assert f"{report['invalid']}" in ui.text("#quality-figures") and report["invalid"] > 0
            described = ui.find("#chart-rules svg").get_attribute("aria-description")
            assert described == ", ".join(f"{rule}: {n}" for rule, n in report["rules"].items())
            widths = [int(b.get_attribute("width")) for b in driver.find_elements(By.CSS_SELECTOR, "#chart-rules rect")]
            assert [w > 0 for w in widths] == [n > 0 for n in report["rules"].values()]
        else:
            assert quality.status_code in (404, 409), quality.text
            expected_failures.append(("/quality", quality.status_code))
            ui.wait(lambda: ui.text("#quality-message") == "No quality report for this run.", what="no report")
            assert ui.find("#quality-figures").text == "" and not driver.find_elements(By.ID, "chart-rules")
        ui.shot("02-invalid-records-and-quality")

        # ... then the first run, chosen with the keyboard: its rows replace the others
        ui.find("input[name=table][value=processed_users]").click()
        select.send_keys(Keys.DOWN)
        caption = f"Processed records of run {first['run_id']}"
        ui.wait(lambda: ui.text("#records-caption") == caption, what=caption)
        assert select.get_attribute("value") == first["run_id"]
        assert ui.text("#records-range") == f"1{DASH}20 of {first['valid_count']}"
        assert ui.column("#records-table", "E-mail") == _emails(p, "processed_users", first["run_id"], 20)
        ui.find("#records-next").click()
        ui.wait(lambda: ui.text("#records-range").startswith(f"21{DASH}40"), what="the second page")
        assert ui.column("#records-table", "E-mail") == _emails(p, "processed_users", first["run_id"], 20, 20)

        # ... and a search within it
        with p.db() as conn:
            name = conn.execute(
                "SELECT first_name FROM processed_users WHERE run_id = ? ORDER BY page, position LIMIT 1 OFFSET 5",
                (first["run_id"],),
            ).fetchone()[0]
            like = f"%{name}%"
            matching = conn.execute(
                "SELECT email FROM processed_users WHERE run_id = ? AND (first_name LIKE ? OR last_name LIKE ? "
                "OR email LIKE ? OR username LIKE ?) ORDER BY page, position LIMIT 20",
                (first["run_id"], like, like, like, like),
            ).fetchall()
        ui.find("#records-q").send_keys(name, Keys.ENTER)
        ui.wait(lambda: name in ui.text("#records-caption"), what="the search result")
        assert ui.column("#records-table", "E-mail") == [m[0] for m in matching]

        # -- the charts of the chosen run agree with the database ------------------------------------
        with p.db() as conn:
            departments = conn.execute(
                "SELECT department, count(*) FROM processed_users WHERE run_id = ? GROUP BY 1", (first["run_id"],)
            ).fetchall()
        ui.wait(lambda: f"{first['valid_count']:,} valid users" in ui.text("#charts-message"), what="the charts")
        bars = driver.find_elements(By.CSS_SELECTOR, "#chart-departments rect.bar")
        assert len(bars) == len(departments) and all(int(b.get_attribute("width")) > 0 for b in bars)
        described = ui.find("#chart-departments svg").get_attribute("aria-description")
        assert sorted(described.split(", ")) == sorted(f"{d}: {n}" for d, n in departments)
        ages = driver.find_elements(By.CSS_SELECTOR, "#chart-age rect.bar")
        assert 1 <= len(ages) <= 6 and all(int(a.get_attribute("width")) > 0 for a in ages)
        age_counts = ui.find("#chart-age svg").get_attribute("aria-description")
        assert sum(int(part.rsplit(": ", 1)[1]) for part in age_counts.split(", ")) == first["valid_count"]

        ui.shot("03-charts")

        # -- the SQL box: an answer, then the API's refusal shown as it is ----------------------------
        sql = "SELECT run_id, count(*) AS users FROM processed_users GROUP BY run_id ORDER BY run_id"
        box = ui.find("#sql-query")
        box.clear()
        box.send_keys(sql)
        ui.find("#sql-form button[type=submit]").click()
        ui.wait(lambda: "row(s)" in ui.text("#sql-info"), what="the query's result")
        with p.db() as conn:
            expected = [[r, str(n)] for r, n in conn.execute(sql)]
        assert ui.rows("#sql-table") == expected
        assert driver.execute_script(TABLE_HEADERS, "#sql-table") == ["run_id", "users"]
        refused = httpx.post(f"http://127.0.0.1:{port}/query_sql", json={"query": "DELETE FROM etl_runs"}, headers=AUTH)
        assert refused.status_code == 400
        box.clear()
        box.send_keys("DELETE FROM etl_runs", Keys.CONTROL, Keys.ENTER)  # Ctrl+Enter runs it too
        expected_failures.append(("/query_sql", 400))
        ui.wait(lambda: ui.text("#sql-error"), what="the refusal")
        detail = refused.json()["detail"]
        assert ui.text("#sql-error") == f"The query was refused. {detail[0].upper()}{detail[1:]}."
        assert ui.rows("#sql-table") == []

        # -- run now: live progress until the run has succeeded, then the new run is shown ------------
        assert not ui.find("#progress-box").is_displayed()  # only once a run is asked for
        ui.find("#run-now").click()
        ui.wait(lambda: ui.find("#progress-box").get_attribute("data-done"), timeout_s=120, what="the run's end")
        assert ui.find("#progress-box").get_attribute("data-done") == "succeeded"
        latest = p.runs()[-1]
        assert latest["status"] == "succeeded" and latest["trigger"] == "api" and len(p.runs()) == 3
        assert ui.text("#progress-text").startswith(f"Run {latest['run_id']} succeeded")
        progress = ui.find("#run-progress")
        assert progress.get_attribute("value") == progress.get_attribute("max")
        ui.wait(lambda: ui.rows("#runs-table")[0][1] == latest["run_id"], what="the new run on top")
        assert select.get_attribute("value") == latest["run_id"]
        ui.wait(lambda: latest["run_id"] in ui.text("#records-caption"), what="the new run's records")
        ui.wait(lambda: ui.rows("#runs-table")[0][9] != "", what="the new run's dead letters")
        ui.shot("04-after-run-now")

        # -- run now while a run goes that the saver has not recorded yet: the console follows that run --------
        going = "20261204_235959_c0ffee"
        p.redis.set(p.keys.run_claim, run_claim(going), px=600_000)
        ui.find("#run-now").click()
        ui.wait(lambda: "already going" in ui.text("#progress-text"), what="the 409 understood")
        expected_failures += [("/etl_runs", 409), (f"/etl_runs/{going}", 404)]
        time.sleep(1)  # a few polls of the run the API named, still unknown (404), before the saver records it
        with closing(sqlite3.connect(p.db_path)) as conn, conn:
            conn.execute(
                "INSERT INTO etl_runs (run_id, run_timestamp, raw_file, processed_file, dlq_file, started_at, "
                "updated_at, finished_at, status) VALUES (?,?,?,?,?,?,?,?,?)",
                (going, "2026-12-04T23:59:59.000Z", "r", "p", "d", *["2026-12-04T23:59:59.000Z"] * 3, "succeeded"),
            )
        ui.wait(lambda: ui.text("#progress-text").startswith(f"Run {going} succeeded"), what="the named run followed")
        p.redis.delete(p.keys.run_claim)

        # -- labelled controls, no console error, nothing but loopback --------------------------------
        assert driver.execute_script(UNLABELLED) == []
        assert _unexpected_errors(log, expected_failures) == []
        resources = driver.execute_script(
            "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
            ".map(e => e.name)"
        )
        assert resources and leaving_the_machine(resources) == []
        assert log.requests and leaving_the_machine(log.requests) == []
        assert proxy.paths and all(path.startswith(f"/{PREFIX}/") for path in proxy.paths), proxy.paths
        # The picture for the README: the run with invalid records, a query answered.
        ui.find("#records-q").clear()
        ui.find("#records-q").send_keys(Keys.ENTER)
        Select(select).select_by_value(second["run_id"])
        box.clear()
        box.send_keys(sql, Keys.CONTROL, Keys.ENTER)
        ui.wait(lambda: ui.text("#records-caption") == f"Processed records of run {second['run_id']}", what="run 2")
        ui.wait(lambda: len(ui.rows("#sql-table")) == 3 and not ui.text("#sql-error"), what="the answer")
        ui.shot("console")
    finally:
        driver.quit()
        proxy.stop()


def _query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def test_an_analyst_charts_runs_sorts_filters_downloads_and_shares_the_view(make_source, make_pipeline, tmp_path):
    """Runs chart, sorting, the department filter, downloads read back, the URL round trip, a new token, 820 px."""
    hostile = make_source(users=hostile_users(60))  # a formula, a CR, a quote... in every text field
    mixed = make_source(120, bad_every=4, seed=2)  # 30 invalid: two pages
    p = make_pipeline(hostile)
    p.start_workers()
    first = _load(p)
    second = _load(p, ETL_SOURCE_URL=mixed.url)
    port = tb.free_port()
    api = p.start("api", ETL_API_PORT=str(port))
    tb.wait_port(port, proc=api.popen)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=30)
    proxy = PrefixProxy(PREFIX, port)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = chromium(tmp_path / "chromium-profile", downloads)
    log = BrowserLog(driver)
    ui = Console(driver, log)
    expected_failures: list[tuple[str, int]] = []
    try:
        driver.get(f"{proxy.url}/ui/#token={TOKEN}")
        ui.wait(lambda: ui.find("#main").is_displayed(), what="the console")
        ui.wait(lambda: ui.text("#records-caption") == f"Processed records of run {second['run_id']}", what="run 2")
        assert _query(driver.current_url) == {"run": second["run_id"]}  # the view is in the URL at once

        # -- the runs chart holds the API's numbers, oldest first ------------------------------------
        ui.wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#chart-runs g.run")) == 2, what="the runs chart")
        charted = driver.execute_script(
            "return [...document.querySelectorAll('#chart-runs g.run')].map(g => ({...g.dataset}))"
        )
        listed = http.get("/etl_runs").json()[::-1]
        assert [c["runId"] for c in charted] == [r["run_id"] for r in listed] == [first["run_id"], second["run_id"]]
        for c, r in zip(charted, listed, strict=True):
            detail = http.get(f"/etl_runs/{r['id']}").json()
            assert (int(c["valid"]), int(c["invalid"])) == (r["valid_count"], r["invalid_count"])
            assert float(c["rate"]) == pytest.approx(r["invalid_count"] / (r["valid_count"] + r["invalid_count"]))
            assert float(c["duration"]) == pytest.approx(detail["duration_s"], abs=0.002)
        assert int(charted[1]["invalid"]) > 0
        heights = driver.execute_script(
            "return [...document.querySelectorAll('#chart-runs rect.invalid')].map(r => +r.getAttribute('height'))"
        )
        assert [h > 0 for h in heights] == [int(c["invalid"]) > 0 for c in charted]
        # One age-band chart; departments sorted, each with its share.
        captions = [f.text for f in driver.find_elements(By.CSS_SELECTOR, "figcaption")]
        assert sum("age band" in c.lower() for c in captions) == 1, captions
        described = ui.find("#chart-departments svg").get_attribute("aria-description").split(", ")
        counts = [int(d.rsplit(": ", 1)[1]) for d in described]
        assert counts == sorted(counts, reverse=True) and sum(counts) == second["valid_count"]
        assert "%" in ui.text("#chart-departments")

        # -- the quality report's columns and their change against the previous run ----------------
        report = http.get(f"/etl_runs/{second['run_id']}/quality")
        if report.status_code == 200:
            columns = report.json()["columns"]
            ui.wait(lambda: len(ui.rows("#quality-columns")) == len(columns), what="the columns of the report")
            before = http.get(f"/etl_runs/{first['run_id']}/quality").json()["columns"]
            for row in ui.rows("#quality-columns"):
                now, then = columns[row[0]], before[row[0]]
                assert row[1] == f"{now['nulls']:,}" and row[5] == f"{now['distinct']:,}"
                change = now["distinct"] - then["distinct"]
                assert row[6] == (f"+{change:,}" if change > 0 else f"\N{MINUS SIGN}{-change:,}" if change else "0")
        else:
            expected_failures.append(("/quality", report.status_code))

        # -- sorting by a column header, both ways, as the API sorts -------------------------------
        def api_ids(**params: str) -> list[str]:
            page = http.get("/data/processed_users", params={"run_id": second["run_id"], "limit": 20, **params})
            return [str(i["user_id"]) for i in page.json()["items"]]

        ui.find("#records-table th button[data-key=age]").click()
        ui.wait(lambda: "by Age ascending" in ui.text("#records-caption"), what="sorted by age")
        assert ui.column("#records-table", "User id") == api_ids(sort="age")
        ui.find("#records-table th button[data-key=age]").click()
        ui.wait(lambda: "by Age descending" in ui.text("#records-caption"), what="sorted by age, descending")
        assert ui.column("#records-table", "User id") == api_ids(sort="age", order="desc")
        assert ui.find("#records-table th[aria-sort]").get_attribute("aria-sort") == "descending"

        # -- a newer view cancels the request of the older one still under way ----------------------
        log.collect()
        driver.execute_script(
            "document.querySelector('#records-table th button[data-key=email]').click();"
            "document.querySelector('#records-table th button[data-key=age]').click();"
        )
        ui.wait(lambda: "by Age ascending" in ui.text("#records-caption"), what="sorted by age again")
        assert ui.column("#records-table", "User id") == api_ids(sort="age")
        log.collect()
        assert [u for u in log.cancelled if "sort=email" in u], log.cancelled
        ui.find("#records-table th button[data-key=age]").click()
        ui.wait(lambda: "by Age descending" in ui.text("#records-caption"), what="sorted by age, descending")

        # -- the department filter, then page 2: all of it in the URL -------------------------------
        department = http.get("/summary", params={"run_id": second["run_id"]}).json()["by_department"][0]
        Select(ui.find("#records-department")).select_by_value(department["department"])
        ui.wait(lambda: f"in {department['department']}" in ui.text("#records-caption"), what="the department")
        assert ui.text("#records-range").endswith(f" of {department['count']}")
        assert ui.column("#records-table", "User id") == api_ids(
            sort="age", order="desc", department=department["department"]
        )
        filtered_url = driver.current_url
        assert _query(filtered_url) == {
            "run": second["run_id"],
            "sort": "age",
            "order": "desc",
            "department": department["department"],
        }
        ui.find("input[name=table][value=invalid_users]").click()
        ui.wait(lambda: ui.text("#records-caption").startswith("Invalid records"), what="the invalid records")
        Select(ui.find("#records-department")).select_by_value("")  # all departments
        ui.wait(lambda: " in " not in ui.text("#records-caption"), what="every department")
        ui.find("#records-next").click()
        ui.wait(lambda: ui.text("#records-range").startswith(f"21{DASH}"), what="page 2 of the invalid records")
        view = {"caption": ui.text("#records-caption"), "rows": ui.rows("#records-table")}
        assert _query(driver.current_url)["page"] == "2" and _query(driver.current_url)["table"] == "invalid_users"

        # -- reload and back restore the view ------------------------------------------------------
        driver.execute_script("window.notReloaded = true")
        driver.refresh()
        ui.wait(lambda: ui.text("#records-range").startswith(f"21{DASH}"), what="page 2 after a reload")
        assert ui.text("#records-caption") == view["caption"] and ui.rows("#records-table") == view["rows"]
        assert ui.find("input[name=table][value=invalid_users]").is_selected()
        assert ui.find("#run-select").get_attribute("value") == second["run_id"]
        driver.back()  # page 1 of the invalid records
        ui.wait(lambda: ui.text("#records-range").startswith(f"1{DASH}"), what="page 1 after back")
        driver.back()  # the invalid records of the department
        ui.wait(lambda: f"in {department['department']}" in ui.text("#records-caption"), what="the department again")
        driver.back()  # the processed records, filtered and sorted
        ui.wait(lambda: ui.text("#records-caption").startswith("Processed records"), what="processed after back")
        assert driver.current_url == filtered_url
        assert ui.find("#records-department").get_attribute("value") == department["department"]
        assert ui.column("#records-table", "User id") == api_ids(
            sort="age", order="desc", department=department["department"]
        )

        # -- a record's masked JSON on demand ------------------------------------------------------
        ui.find("#records-table tbody tr button").click()
        ui.wait(lambda: ui.find("#record-box").is_displayed(), what="the record's JSON")
        shown = json.loads(ui.text("#record-json"))
        item = http.get(
            "/data/processed_users",
            params={"run_id": second["run_id"], "sort": "age", "order": "desc", "department": department["department"]},
        ).json()["items"][0]
        assert shown == item["record"] and "password" not in shown and shown["id"] == item["user_id"]

        # -- downloads of the hostile run: safe CSV read back exactly, Parquet as stored --------------
        Select(ui.find("#run-select")).select_by_value(first["run_id"])
        ui.wait(lambda: f"{first['valid_count']:,} valid users" in ui.text("#charts-message"), what="run 1's charts")
        Select(ui.find("#records-department")).select_by_value("")  # all departments
        ui.wait(
            lambda: ui.text("#records-caption").startswith(f"Processed records of run {first['run_id']}, by"),
            what="run 1",
        )
        ui.find("#download-csv").click()
        ui.wait(lambda: ui.find("#download-status").get_attribute("data-file"), what="the CSV download")
        file = downloaded(downloads)
        assert file.name == f"processed_users_{first['run_id']}.csv"
        rows = list(csv.reader(io.StringIO(file.read_bytes().decode(), newline="")))
        raw = http.get(
            "/data/processed_users.csv",
            params={"run_id": first["run_id"], "sort": "age", "order": "desc", "raw": "true"},
        )
        expected = list(csv.reader(io.StringIO(raw.text, newline="")))
        assert http.get("/data/processed_users.csv", params={"raw": "maybe"}).status_code == 422
        assert len(rows) == first["valid_count"] + 1 and [[unneutralised(c) for c in r] for r in rows] == expected
        cells = [c for r in expected[1:] for c in r]
        assert set(HOSTILE) & set(cells)  # the hostile values made it through the pipeline
        assert [c for r in rows[1:] for c in r if runs_as_formula(c)] == []
        file.unlink()
        ui.find("#download-parquet").click()
        ui.wait(
            lambda: (ui.find("#download-status").get_attribute("data-file") or "").endswith(".parquet"), what="Parquet"
        )
        table = pq.read_table(downloaded(downloads))
        assert table.column("first_name").to_pylist() == [r[3] or None for r in expected[1:]]

        # -- a new sign-in link pasted into the open tab: honoured without a reload -----------------
        driver.execute_script("window.notReloaded = true")
        view_url = driver.current_url
        driver.execute_script("location.hash = '#token=not-the-token'")
        expected_failures.append(("/etl_runs?limit=1", 401))
        ui.wait(lambda: "refused" in ui.text("#sign-in-error"), what="the wrong link refused")
        assert driver.execute_script("return sessionStorage.getItem('etl.apiToken')") is None
        driver.execute_script("location.hash = '#token=' + encodeURIComponent(arguments[0])", TOKEN)
        ui.wait(lambda: ui.find("#main").is_displayed(), what="the console signed in by the new link")
        assert driver.execute_script("return window.notReloaded") is True
        assert driver.execute_script("return sessionStorage.getItem('etl.apiToken')") == TOKEN
        assert driver.execute_script("return location.hash") == "" and driver.current_url == view_url

        # -- a refused query says which column is not available and which are ----------------------
        box = ui.find("#sql-query")
        box.clear()
        box.send_keys("SELECT record FROM processed_users", Keys.CONTROL, Keys.ENTER)
        expected_failures.append(("/query_sql", 400))
        ui.wait(lambda: ui.text("#sql-error"), what="the refusal")
        refusal = ui.text("#sql-error")
        assert refusal.startswith("The query was refused. Column processed_users.record is not available")
        assert "first_name" in refusal and "400" not in refusal

        # -- 820 px wide: no sideways scroll, the start time on one line ----------------------------
        driver.set_window_size(820, 1000)
        ui.wait(lambda: driver.execute_script("return window.innerWidth") <= 820, what="the narrow window")
        fit = driver.execute_script(
            """const box = document.querySelector('#runs-table').parentElement;
            // The lines the text of each "Started (UTC)" cell takes (the header's and every run's).
            const lines = [...document.querySelectorAll('#runs-table tr')].map(tr => {
              const range = document.createRange();
              range.selectNodeContents(tr.cells[4]);
              const line = parseFloat(getComputedStyle(tr.cells[4]).lineHeight);
              return Math.round(range.getBoundingClientRect().height / line);
            });
            return {table: box.scrollWidth - box.clientWidth, page: document.documentElement.scrollWidth - innerWidth,
                    lines, header: document.querySelector('#runs-table thead tr').cells[4].textContent};"""
        )
        assert fit["table"] <= 0 and fit["page"] <= 0, fit
        assert fit["header"] == "Started (UTC)" and fit["lines"] == [1, 1, 1], fit
        OUTPUT.mkdir(parents=True, exist_ok=True)
        driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
        driver.save_screenshot(str(OUTPUT / "820px.png"))

        assert driver.execute_script(UNLABELLED) == []
        assert _unexpected_errors(log, expected_failures) == []
        assert log.requests and leaving_the_machine(log.requests) == []
    finally:
        driver.quit()
        proxy.stop()
        http.close()


def test_a_stale_link_a_long_department_and_the_keyboard(make_source, make_pipeline, tmp_path):
    """A link to a page past the end shows the last page; a long department never widens the page; a sort
    header used from the keyboard keeps the focus."""
    users = [make_user(uid) for uid in range(1, 51)]
    long_name = "Research and Development of " + "very " * 60 + "long names"  # ~340 characters
    for user in users[:3]:
        user["company"]["department"] = long_name
    users[3]["company"]["department"] = "Sales\tEast"  # a name the API cannot filter on (a control character)
    unbroken = "Q" * 400  # a name without a place to break a line
    users[4]["company"]["department"] = unbroken
    p = make_pipeline(make_source(users=users))
    p.start_workers()
    run = _load(p)
    port = tb.free_port()
    api = p.start("api", ETL_API_PORT=str(port))
    tb.wait_port(port, proc=api.popen)
    proxy = PrefixProxy(PREFIX, port)
    driver = chromium(tmp_path / "chromium-profile")
    log = BrowserLog(driver)
    ui = Console(driver, log)
    try:
        # -- links to pages past the end (the data changed, or a hand-made URL): the last page instead ---
        driver.get(f"{proxy.url}/ui/?sort=age&order=desc&page=99&runs=7#token={TOKEN}")
        ui.wait(lambda: ui.text("#records-range") == f"41{DASH}50 of 50", what="the last page of records")
        ui.wait(lambda: ui.text("#runs-range") == f"1{DASH}1 of 1", what="the only page of runs")
        assert _query(driver.current_url) == {"run": run["run_id"], "sort": "age", "order": "desc", "page": "3"}
        assert len(ui.rows("#records-table")) == 10 and not ui.text("#records-error")
        driver.get(f"{proxy.url}/ui/?page=600000")  # past the API's largest offset too
        ui.wait(lambda: ui.text("#records-range") == f"41{DASH}50 of 50", what="the last page, not a 422")
        assert not ui.text("#records-error") and _query(driver.current_url)["page"] == "3"

        # -- a sort header used from the keyboard: the focus stays on it ------------------------------
        driver.get(f"{proxy.url}/ui/")
        ui.wait(lambda: ui.text("#records-range") == f"1{DASH}20 of 50", what="page 1")
        ui.find("#records-table th button[data-key=age]").send_keys(Keys.ENTER)
        ui.wait(lambda: "by Age ascending" in ui.text("#records-caption"), what="sorted by age")
        focused = "return document.activeElement.dataset.key || document.activeElement.tagName"
        assert driver.execute_script(focused) == "age"
        driver.switch_to.active_element.send_keys(Keys.ENTER)
        ui.wait(lambda: "by Age descending" in ui.text("#records-caption"), what="sorted by age, descending")
        assert driver.execute_script(focused) == "age"

        # -- 820 px with a department of 340 characters in the filter: no sideways scroll -------------
        ui.wait(lambda: long_name in [o.text for o in Select(ui.find("#records-department")).options], what="it")
        offered = [o.get_attribute("value") for o in Select(ui.find("#records-department")).options]
        assert "Sales\tEast" not in offered and "Sales East" in ui.find("#chart-departments svg").get_attribute(
            "aria-description"
        ).replace("\t", " ")
        for width in (1280, 820):
            driver.set_window_size(width, 1000)
            ui.wait(lambda w=width: driver.execute_script("return window.innerWidth") <= w, what="the window")
            wide = driver.execute_script("return document.documentElement.scrollWidth - innerWidth")
            assert wide <= 0, (width, wide)
        Select(ui.find("#records-department")).select_by_value(long_name)
        ui.wait(lambda: ui.text("#records-range") == f"1{DASH}3 of 3", what="the long department's records")
        Select(ui.find("#records-department")).select_by_value(unbroken)  # in the caption now
        ui.wait(lambda: ui.text("#records-range") == f"1{DASH}1 of 1", what="the unbroken department's record")
        assert unbroken in ui.text("#records-caption")
        assert driver.execute_script("return document.documentElement.scrollWidth - innerWidth") <= 0
        # A refusal quoting a long word of the query breaks too.
        box = ui.find("#sql-query")
        box.clear()
        box.send_keys(f"SELECT {unbroken} FROM processed_users", Keys.CONTROL, Keys.ENTER)
        ui.wait(lambda: unbroken in ui.text("#sql-error"), what="the refusal")
        assert driver.execute_script("return document.documentElement.scrollWidth - innerWidth") <= 0
        assert _unexpected_errors(log, [("/query_sql", 400)]) == []
    finally:
        driver.quit()
        proxy.stop()


def test_the_built_package_ships_every_console_file(tmp_path):
    """A wheel of the project (what a non-editable install gets) holds the console's files (needs PyPI)."""
    src = tmp_path / "src"  # a copy: building in place would leave build/ in the work tree
    for name in ("services", "testbed"):
        shutil.copytree(tb.ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(tb.ROOT / name, src / name)
    built = subprocess.run(
        [tb.PYTHON, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w", str(tmp_path), "."],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("etl_users-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = {n.removeprefix("api/console/") for n in z.namelist() if n.startswith("api/console/")}
    files = {str(f.relative_to(CONSOLE)) for f in CONSOLE.rglob("*") if f.is_file()}
    assert files >= {"index.html", "console.js", "console.css"} and shipped == files
