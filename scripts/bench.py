"""`make bench`: end-to-end throughput and memory of the real pipeline at several sizes, against an in-run ceiling.

A benchmark, not a test: it prints figures and asserts nothing. Each run starts its own Redis, source server,
transformer(s), saver and extractor as processes (package testbed; one OpenSSH SFTP server for all), asks
for a run on the commands stream and waits for `succeeded` in etl_runs. Environment: BENCH_SIZES ("10000,100000"),
BENCH_REPEAT (1), BENCH_TRANSFORMERS (1), BENCH_PAGE_SIZE (100), BENCH_POOL (1000: users the source really
generates, the rest are cloned from them), BENCH_SMALL (3: timed 208-user runs on a warm stack; 0 skips them),
BENCH_CEILING (1; 0 skips the in-run ceiling and reference loader), BENCH_PROFILE (1: py-spy on every service).
BENCH_SOURCE_LATENCY_MS (0: added to every source answer). BENCH_DATABASE (sqlite; postgresql: a private cluster
started by testbed/postgres.py for the whole bench, a fresh database per run migrated by `python -m saver migrate`,
stopped at the end; its server processes' CPU and memory are reported as the role `postgres`). BENCH_SAVERS (1; more
only on PostgreSQL, as the product runs one saver on SQLite). The ceiling and the reference loader are SQLite's.
"""

import os
import re
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import psycopg
import redis

import testbed as tb
from etl_common import streams
from etl_common.keys import Keys
from saver.store import Store
from testbed.postgres import Postgres, start_postgres
from transformer.enrich import load_departments
from transformer.transform import transform_page

REAL_USERS = tb.ROOT.parent / "shared" / "data" / "dummyjson" / "users.json"
BAD_EVERY = 10  # one user in ten breaks a rule, so the invalid path is exercised too


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set of a live process (VmHWM), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_s(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) a live process has used: robust to other load on the machine.

    With ``children`` the CPU of its children that have exited and been waited for is added (sshd's sessions).
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
        return ticks / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


def _children(pid: int) -> list[int]:
    """The live children of a single-threaded process (PostgreSQL's postmaster: its backends and workers)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _pss_mb(pid: int) -> float:
    """Proportional set size of a live process, in MB: shared memory divided among its sharers, so it adds up."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _wait_children_gone(pid: int, timeout_s: float = 3.0) -> None:
    """Wait (bounded) until ``pid`` has no child left, so their CPU is in its cutime/cstime."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if not Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
                return
        except OSError:
            return
        time.sleep(0.05)


def _ts(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() if iso else None


def _log_events(path: Path, event: str) -> list[dict]:
    out = []
    if path.exists():
        with path.open("rb") as fh:
            for line in fh:
                if event.encode() in line:
                    try:
                        out.append(orjson.loads(line))
                    except orjson.JSONDecodeError:
                        continue
    return [e for e in out if e.get("event") == event]


class Stack(tb.Stack):
    """Redis, a source, the workers and the extractor service (testbed's stack), up until ``stop``."""

    def __init__(
        self,
        base: Path,
        sftp: tb.Sftp,
        count: int,
        transformers: int,
        page_size: int,
        pool: int,
        real: bool = False,
        *,
        postgres: Postgres | None = None,
        savers: int = 1,
    ) -> None:
        args = (
            ["--data", str(REAL_USERS)]
            if real and REAL_USERS.exists()
            else ["--count", str(count), "--bad-every", str(0 if real else BAD_EVERY), "--pool", str(pool)]
        )
        # BENCH_SOURCE_LATENCY_MS: added to every source answer (a far-away source; dummyjson.com is 100-300 ms away).
        args += ["--latency-ms", os.environ.get("BENCH_SOURCE_LATENCY_MS", "0")]
        self.keys = Keys("bench:")
        self.postgres = postgres
        self.url = postgres.create_database() if postgres else None
        settings = {"ETL_PAGE_SIZE": str(page_size), "ETL_RETRY_DELAYS": "0.2,0.5,1", "ETL_SCHEDULE": "0 3 1 1 *"}
        if self.url:
            settings["ETL_DATABASE_URL"] = self.url
        super().__init__(
            base,
            services=("transformer", "saver", "extractor"),
            # One saver keeps the role name `saver`; several are saver-1, saver-2, ... in the consumer group.
            replicas={"transformer": transformers, **({"saver": savers} if savers > 1 else {})},
            settings=settings,
            sftp=sftp,
            source_args=args,
            prefix=self.keys.prefix,
            db_path=base / "data.db",
            data_dir=base / "files",
        )
        # The operator's other ETL_* settings lie under the benchmark's own (its Redis and source included).
        own = {*self.env(), "ETL_REDIS_URL", "ETL_SOURCE_URL", "ETL_DATABASE_URL"}
        self.settings.update({k: v for k, v in os.environ.items() if k.startswith("ETL_") and k not in own})
        self.db: Path | str = self.url or self.db_path
        self.roles = self.procs  # role -> process: redis, source, transformer-1.., saver(s), extractor
        self.watch: sqlite3.Connection | None = None  # PostgreSQL: the bench's one polling connection
        self.watch_pid = 0  # its server process, left out of the cluster's CPU
        try:
            if self.url:
                self.migrate()
            self.up()
            if self.url:
                self.watch = tb.reader(self.url)
                self.watch_pid = self.watch.execute("SELECT pg_backend_pid()").fetchone()[0]
        except BaseException:
            self.close()
            raise
        self.client = redis.Redis.from_url(str(self.redis_url))

    def migrate(self) -> None:
        """`python -m saver migrate` on the new database, as the product runs it before the savers start."""
        self.start_redis()
        proc = self.start("saver", "migrate", tag="saver-migrate")
        code = proc.popen.wait(120)
        del self.procs["saver-migrate"]
        if code != 0:
            raise RuntimeError(f"python -m saver migrate exited {code}: {proc.output()[-2000:]}")

    def close(self) -> None:
        """The processes, then (PostgreSQL) the polling connection and the run's database (gigabytes at 1M users)."""
        super().close()
        if self.watch is not None:
            self.watch.close()
            self.watch = None
        if self.postgres and self.url:
            with psycopg.connect(self.postgres.url(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.url.rsplit("/", 1)[1]}" WITH (FORCE)')
            self.url = None

    def trigger(self) -> float:
        """Ask for a run as the API does (a run_now command); the trigger time."""
        t0 = time.time()
        self.client.xadd(
            self.keys.commands_stream,
            streams.encode({"type": "run_now", "request_id": secrets.token_hex(8), "trigger": "bench"}),
        )
        return t0

    def wait_run(self, after: float, timeout_s: float, seen: dict | None = None) -> sqlite3.Row:
        """The first run started since ``after`` (epoch s) to finish; polled often, as its end time is measured.

        With ``seen``, the moment the run is first seen ``loaded`` (every page in, files and upload to come) is kept
        as ``seen["loaded"] = (epoch s, CPU seconds per role)``: the tail's start.
        """
        deadline = time.monotonic() + timeout_s

        def wait(statuses: tuple[str, ...]) -> sqlite3.Row:
            if self.watch is not None:
                return self._poll(statuses, after, deadline)
            return tb.wait_for_run(
                self.db,
                statuses,
                timeout_s=max(0.0, deadline - time.monotonic()),
                started_after=after,
                step_s=0.005,
                logs=lambda: f"logs in {self.base / 'logs'}",
            )

        if seen is not None and wait(("loaded", *tb.FINAL_STATUSES))["status"] == "loaded":
            seen["loaded"] = (time.time(), self.cpu())
        return wait(tb.FINAL_STATUSES)

    def _poll(self, statuses: tuple[str, ...], after: float, deadline: float) -> sqlite3.Row:
        """tb.wait_for_run over the one open connection: a new one per poll would fork a server process each time."""
        assert self.watch is not None
        while True:
            row = self.watch.execute("SELECT * FROM etl_runs ORDER BY id DESC LIMIT 1").fetchone()
            if row is not None and (_ts(row["started_at"]) or 0) >= after - 1 and row["status"] in statuses:
                return row
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no run in {statuses} by the deadline; last: {row and dict(row)}")
            time.sleep(0.02)

    def _cluster(self) -> list[int]:
        """The PostgreSQL server's processes (postmaster and children) but the bench's own polling backend."""
        if self.postgres is None:
            return []
        postmaster = self.postgres.proc.pid
        return [postmaster, *(c for c in _children(postmaster) if c != self.watch_pid)]

    def cpu(self) -> dict[str, float]:
        """CPU seconds per role, with its reaped children (the saver's quality-report child, Redis's rewrites).

        On PostgreSQL the role `postgres` is the whole cluster: the postmaster with its exited children (the
        connections that closed), plus every live backend and worker (the savers' sessions, autovacuum, WAL).
        """
        out = {role: cpu_s(p.popen.pid, children=True) for role, p in self.roles.items()}
        if self.postgres is not None:
            pids = self._cluster()
            out["postgres"] = cpu_s(pids[0], children=True) + sum(cpu_s(pid) for pid in pids[1:])
        return out

    def peaks(self) -> dict[str, float]:
        out = {role: vm_hwm_mb(p.popen.pid) for role, p in self.roles.items()}
        out["redis used_memory_peak"] = int(self.client.info("memory")["used_memory_peak"]) / 2**20
        if self.postgres is not None:
            pids = self._cluster()
            # Each backend's peak counts the shared buffers it touched: the largest process, and the sum of PSS.
            out["postgres largest process"] = max(vm_hwm_mb(pid) for pid in pids)
            out["postgres PSS sum at end"] = sum(_pss_mb(pid) for pid in pids)
        return out

    def db_mb(self) -> float:
        """The database's size on disk at the end of the run, in MB (SQLite: the file with its WAL)."""
        if self.watch is not None:
            return float(self.watch.execute("SELECT pg_database_size(current_database())").fetchone()[0]) / 2**20
        return sum(p.stat().st_size for p in self.base.glob("data.db*")) / 2**20


def stages(stack: Stack, run: sqlite3.Row, t0: float) -> dict[str, float]:
    """Seconds from the trigger to the end of each stage (logs and etl_runs/loaded_pages timestamps)."""
    logs = stack.base / "logs"
    with closing(tb.reader(stack.db)) as conn:
        first_load, last_load = conn.execute(
            "SELECT min(loaded_at), max(loaded_at) FROM loaded_pages WHERE run_id=?", (run["run_id"],)
        ).fetchone()
    ext = _log_events(logs / "extractor.log", "extraction complete")
    transformed = [e for p in logs.glob("transformer-*.log") for e in _log_events(p, "page transformed")]
    # Whichever saver finished the run logged it (saver, or saver-1, saver-2, ... on PostgreSQL).
    files = sorted(
        (e for p in logs.glob("saver*.log") for e in _log_events(p, "files written")), key=lambda e: e["timestamp"]
    )
    out = {
        "start": _ts(run["started_at"]),
        "extracted": _ts(ext[-1]["timestamp"]) if ext else None,
        "transformed": max((_ts(e["timestamp"]) for e in transformed), default=None),
        "first load": _ts(first_load),
        "loaded": _ts(last_load),
        "files written": _ts(files[-1]["timestamp"]) if files else None,
        "succeeded": _ts(run["finished_at"]),
    }
    return {k: round(v - t0, 2) for k, v in out.items() if v is not None}


def split(stack: Stack, service: str = "transformer", event: str = "page transformed") -> dict[str, int]:
    """Pages per replica of ``service`` (its ``event`` log lines)."""
    logs = sorted((stack.base / "logs").glob(f"{service}*.log"))
    return {p.stem: len(_log_events(p, event)) for p in logs if not p.stem.endswith("-migrate")}


def ceiling(source_url: str, total: int, page_size: int, base: Path, batch_pages: int = 10) -> float:
    """Users/s of parse + validate + insert of the same pages in one process, no messaging (fetch not timed)."""
    store, departments = Store(str(base / "ceiling.db")), load_departments()
    busy, batch = 0.0, []
    with httpx.Client(timeout=60) as http:
        for skip in range(0, total, page_size):
            body = http.get(source_url, params={"limit": page_size, "skip": skip}).content
            t = time.perf_counter()
            users = orjson.loads(body)["users"]
            batch.append(
                {
                    "run_id": "ceiling",
                    "run_ts": "20260101_000000",
                    "page": skip // page_size,
                    **transform_page(users, departments),
                }
            )
            if len(batch) == batch_pages or skip + page_size >= total:
                store.load_pages(batch)
                batch = []
            busy += time.perf_counter() - t
    store.close()
    return total / busy


# The reference loader's five rules: fixed yardstick code, not the transformer's (whose changes it must not follow).
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")


def _five_rules(user: dict) -> bool:
    company = user.get("company")
    return (
        type(user.get("id")) is int
        and isinstance(user.get("firstName"), str)
        and bool(user["firstName"].strip())
        and isinstance(user.get("email"), str)
        and _EMAIL.fullmatch(user["email"]) is not None
        and isinstance(user.get("age"), (int, float))
        and 18 <= user["age"] <= 65
        and isinstance(company, dict)
        and isinstance(company.get("department"), str)
        and bool(company["department"].strip())
    )


def loader(source_url: str, total: int, page_size: int, base: Path) -> dict[str, float]:
    """The one-process loader the pipeline is held against: fetch + parse + the five rules + one insert per user.

    Fetch (httpx), orjson, the rules above and one SQLite row per user (the record as the source wrote it, and
    whether it is valid), a transaction per page. Returns its CPU per user (``process_time``: robust to other load
    on the machine) and its rate (wall clock, fetch included: the source's time counts as it does for the pipeline).
    """
    base.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(base / "loader.db")
    db.execute("CREATE TABLE users (id INTEGER, page INTEGER, valid INTEGER, record TEXT)")
    t0, c0 = time.perf_counter(), time.process_time()
    with httpx.Client(timeout=60) as http:
        for skip in range(0, total, page_size):
            users = orjson.loads(http.get(source_url, params={"limit": page_size, "skip": skip}).content)["users"]
            rows = [(u.get("id"), skip, _five_rules(u), orjson.dumps(u).decode()) for u in users]
            with db:
                db.executemany("INSERT INTO users VALUES (?, ?, ?, ?)", rows)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    db.close()
    return {"cpu_us": cpu * 1e6 / total, "rate": total / wall}


def measure(stack: Stack, n: int) -> dict:
    """Trigger one run of ``n`` users on a started stack and wait for it: rate, stages, tail, CPU and RSS."""
    load0 = os.getloadavg()[0]
    sshd = stack.sftp.proc.popen.pid if stack.sftp.proc else 0
    sshd0, cpu0 = cpu_s(sshd, children=True), stack.cpu()
    t0 = stack.trigger()
    seen: dict = {}
    run = stack.wait_run(t0, timeout_s=max(120.0, n / 500), seen=seen)
    cpu1 = stack.cpu()
    # The SFTP server's share (its session processes, counted once reaped): the receiving end, not ours.
    _wait_children_gone(sshd)
    sshd_us = (cpu_s(sshd, children=True) - sshd0) * 1e6 / n
    cpu = {k: (v - cpu0[k]) * 1e6 / n for k, v in cpu1.items()}
    elapsed = (_ts(run["finished_at"]) or time.time()) - t0
    st = stages(stack, run, t0)
    # The tail: from the last page loaded (loaded_pages) to `succeeded` (files written, then the SFTP upload).
    tail_s = st["succeeded"] - st["loaded"] if "succeeded" in st and "loaded" in st else float("nan")
    # CPU of the tail, from the moment the run was first seen 'loaded' (polled every 5 ms) to the end.
    at_loaded = seen.get("loaded", (None, None))[1]
    tail_cpu = {k: (v - at_loaded[k]) * 1e6 / n for k, v in cpu1.items()} if at_loaded else {}
    return {
        "n": n,
        "status": run["status"],
        "seconds": elapsed,
        "rate": n / elapsed,
        "valid": run["valid_count"],
        "invalid": run["invalid_count"],
        "stages": st,
        "tail_s": tail_s,
        "tail_share": tail_s / st["succeeded"] if "succeeded" in st else float("nan"),
        "tail_cpu": tail_cpu,
        "sshd_cpu": sshd_us,
        "peaks": stack.peaks(),
        "db_mb": stack.db_mb(),
        "split": split(stack),
        "savers": split(stack, "saver", "page loaded"),
        "cpu": cpu,
        "load": (load0, os.getloadavg()[0]),
    }


def bench_size(
    n: int,
    sftp: tb.Sftp,
    work: Path,
    transformers: int,
    page_size: int,
    pool: int,
    postgres: Postgres | None = None,
    savers: int = 1,
) -> dict:
    base = Path(tempfile.mkdtemp(prefix=f"n{n}-", dir=work))
    stack = Stack(base, sftp, n, transformers, page_size, pool, postgres=postgres, savers=savers)
    profilers = profile(stack) if os.environ.get("BENCH_PROFILE") else []
    try:
        result = measure(stack, n)
        # The ceiling runs with the workers stopped, on the same source and data.
        for role in [r for r in stack.roles if r != "source"]:
            stack.roles[role].stop()
        if os.environ.get("BENCH_CEILING", "1") != "0":  # 0: skip both (they take as long as the run at 1,000,000)
            result["ceiling"] = ceiling(stack.source_url, n, page_size, base)
            result["loader"] = loader(stack.source_url, n, page_size, base)
    finally:
        stack.close()
        for p in profilers:
            p.stop()
        _clean(base, sftp)
    return result


def _clean(base: Path, sftp: tb.Sftp) -> None:
    """Drop the run's databases and files (gigabytes at 1M users); logs and profiles stay."""
    for path in [*base.glob("*.db*"), *(base / "files").rglob("*"), *sftp.upload_dir.rglob("*")]:
        if path.is_file():
            path.unlink()


def profile(stack: Stack) -> list[tb.Proc]:
    """py-spy on every Python service (BENCH_PROFILE=1): collapsed stacks in <work>/n*/prof/<role>.txt."""
    spy = Path(tb.PYTHON).with_name("py-spy")
    return [
        tb.spawn(
            f"py-spy-{role}",
            [
                str(spy),
                "record",
                "--pid",
                str(p.popen.pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--nonblocking",
                "-o",
                str(stack.base / "prof" / f"{role}.txt"),
            ],
            stack.base / "prof",
        )
        for role, p in stack.roles.items()
        if role != "redis"
    ]


def small_runs(sftp: tb.Sftp, work: Path, times: int, postgres: Postgres | None = None, savers: int = 1) -> list[float]:
    """The 208-user run from trigger to `succeeded` with the services already up (one warm-up first)."""
    base = Path(tempfile.mkdtemp(prefix="n208-", dir=work))
    stack = Stack(base, sftp, 208, 1, 100, 0, real=True, postgres=postgres, savers=savers)
    out = []
    try:
        for i in range(times + 1):
            time.sleep(1.1)  # file names carry the start second
            t0 = stack.trigger()
            run = stack.wait_run(t0, 60)
            if i and run["status"] == "succeeded":
                out.append(_ts(run["finished_at"]) - t0)
    finally:
        stack.close()
    return out


def _stack_cpu(r: dict) -> float:
    """CPU per user of the whole stack: every process but the source (Redis and the quality child included)."""
    return sum(v for k, v in r["cpu"].items() if k != "source")


def report(r: dict) -> None:
    frac = r["rate"] / r["ceiling"] if r.get("ceiling") else float("nan")
    print(
        f"  N={r['n']:,}: {r['status']} in {r['seconds']:.2f} s = {r['rate']:,.0f} users/s "
        f"({r['valid']:,} valid, {r['invalid']:,} invalid)"
        + (f"; ceiling {r['ceiling']:,.0f} users/s -> {frac:.0%}" if r.get("ceiling") else "")
        + f"; load average {r['load'][0]:.2f} -> {r['load'][1]:.2f}"
    )
    print("    stage ends (s after trigger): " + ", ".join(f"{k} {v}" for k, v in r["stages"].items()))
    tail_cpu = r["tail_cpu"]
    print(
        f"    tail (last page loaded -> succeeded: files, upload): {r['tail_s']:.2f} s = "
        f"{r['tail_share']:.0%} of the run"
        + (
            f"; its CPU per user (us): {sum(tail_cpu.values()):.0f} = "
            + ", ".join(f"{k} {v:.0f}" for k, v in tail_cpu.items() if v >= 0.5)
            if tail_cpu
            else ""
        )
        + f"; SFTP server (sshd) {r['sshd_cpu']:.0f} us per user, not counted above"
    )
    print(
        "    peak RSS (MB): "
        + ", ".join(f"{k} {v:.0f}" for k, v in r["peaks"].items())
        + f"; database on disk {r['db_mb']:,.0f} MB"
    )
    stack_cpu = _stack_cpu(r)
    print(
        f"    CPU per user (us): {sum(r['cpu'].values()):.0f} = "
        + ", ".join(f"{k} {v:.0f}" for k, v in r["cpu"].items())
        + f" (pipeline without the source: {stack_cpu:.0f})"
    )
    if r.get("loader"):
        ref = r["loader"]
        print(
            f"    reference loader (fetch + parse + five rules + one insert per user, one process): "
            f"{ref['cpu_us']:.0f} us CPU per user, {ref['rate']:,.0f} users/s; the pipeline spends "
            f"{stack_cpu / ref['cpu_us']:.2f}x its CPU per user and runs at {r['rate'] / ref['rate']:.0%} of its rate"
        )
    print(
        "    pages per transformer: "
        + ", ".join(f"{k} {v}" for k, v in r["split"].items())
        + "; pages loaded per saver: "
        + ", ".join(f"{k} {v}" for k, v in r["savers"].items()),
        flush=True,
    )


def _database() -> tuple[str, int] | str:
    """(BENCH_DATABASE, BENCH_SAVERS), or the one line that refuses them."""
    engine, savers = os.environ.get("BENCH_DATABASE", "sqlite").strip().lower(), _env_int("BENCH_SAVERS", 1)
    if engine not in ("sqlite", "postgresql"):
        return f"BENCH_DATABASE={engine!r} is not an engine: use sqlite (the default) or postgresql"
    if savers < 1:
        return f"BENCH_SAVERS={savers}: a run needs at least one saver"
    if savers > 1 and engine == "sqlite":
        return (
            f"BENCH_SAVERS={savers} needs BENCH_DATABASE=postgresql: SQLite has one writer, so the product runs "
            "exactly one saver on it (the chart refuses saver.replicas above 1)"
        )
    return engine, savers


def main() -> int:
    chosen = _database()
    if isinstance(chosen, str):
        print(f"bench: {chosen}", file=sys.stderr)
        return 2
    engine, savers = chosen
    sizes = [int(x) for x in os.environ.get("BENCH_SIZES", "10000,100000").split(",") if x.strip()]
    repeat, transformers = _env_int("BENCH_REPEAT", 1), _env_int("BENCH_TRANSFORMERS", 1)
    page_size, pool, small = _env_int("BENCH_PAGE_SIZE", 100), _env_int("BENCH_POOL", 1000), _env_int("BENCH_SMALL", 3)
    print(
        f"bench: {engine}, {savers} saver(s), sizes {sizes}, repeat {repeat}, transformers {transformers}, "
        f"page size {page_size}, source pool {pool}, {os.cpu_count()} cores, load average "
        f"{Path('/proc/loadavg').read_text().strip()}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="etl-bench-"))
    postgres = start_postgres() if engine == "postgresql" else None
    sftp = tb.start_sftp(work / "sshd", work / "ssh_keys", work / "upload")
    summary = []
    try:
        if small:
            times = small_runs(sftp, work, small, postgres, savers)
            line = (
                (
                    f"208 users (warm services): median {statistics.median(times):.3f} s over {len(times)} runs "
                    f"({', '.join(f'{t:.3f}' for t in times)})"
                )
                if times
                else "208 users: no run succeeded"
            )
            print(line, flush=True)
            summary.append(line)
        for n in sizes:
            results = []
            for i in range(repeat):
                print(f"N={n:,} run {i + 1}/{repeat}", flush=True)
                results.append(bench_size(n, sftp, work, transformers, page_size, pool, postgres, savers))
                report(results[-1])
            rates = [r["rate"] for r in results]
            if not all(r.get("loader") for r in results):
                summary.append(
                    f"N={n:,} {engine}, {savers} saver(s), x{transformers} transformer(s): median "
                    f"{statistics.median(rates):,.0f} users/s, CPU per user without the source "
                    f"{statistics.median(_stack_cpu(r) for r in results):.0f} us, load average "
                    + ", ".join(f"{a:.2f}->{b:.2f}" for a, b in (r["load"] for r in results))
                    + " (no ceiling, BENCH_CEILING=0)"
                )
                continue
            ceil = statistics.median(r["ceiling"] for r in results)
            rss = max(v for r in results for k, v in r["peaks"].items() if k not in ("redis used_memory_peak",))
            summary.append(
                f"N={n:,} x{transformers} transformer(s), page {page_size}: median {statistics.median(rates):,.0f} "
                f"users/s ({', '.join(f'{x:,.0f}' for x in rates)}), ceiling {ceil:,.0f} users/s "
                f"({statistics.median(rates) / ceil:.0%}), max service peak RSS {rss:.0f} MB, redis peak "
                f"{max(r['peaks']['redis used_memory_peak'] for r in results):.0f} MB, tail "
                f"{statistics.median(r['tail_share'] for r in results):.0%} of the run, CPU per user "
                f"{statistics.median(sum(r['cpu'].values()) for r in results):.0f} us (median), without the "
                f"source {statistics.median(_stack_cpu(r) for r in results):.0f} us = "
                f"{statistics.median(_stack_cpu(r) / r['loader']['cpu_us'] for r in results):.2f}x the reference "
                f"loader's ({statistics.median(r['loader']['cpu_us'] for r in results):.0f} us), rate "
                f"{statistics.median(r['rate'] / r['loader']['rate'] for r in results):.0%} of the loader's"
            )
    finally:
        sftp.stop()
        if postgres is not None:
            postgres.stop()
    print("\nsummary")
    for line in summary:
        print("  " + line)
    print(f"(work files in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
