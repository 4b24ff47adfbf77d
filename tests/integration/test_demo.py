"""`make demo` under ordinary habits: busy ports, typos, `.env`, a failing source, a closed terminal, a kill."""

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

import testbed as tb
from tests.faults.conftest import wait_for

DEMO = tb.ROOT / "scripts" / "demo.py"
pytestmark = pytest.mark.slow


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports."""
    for _ in range(50):
        base = tb.free_port()
        if base + n < 65535 and all(_bindable(base + i) for i in range(n)):
            return base
    raise RuntimeError("no run of free ports")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Demo:
    """scripts/demo.py as a process, with its state in a temporary folder and its own ports."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.api_port = free_ports(1)
        self.ops_port = free_ports(3)

    def env(self, **settings: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
        env.update({"ETL_API_PORT": str(self.api_port), "ETL_OPS_PORT": str(self.ops_port), **settings})
        return env

    def argv(self, *args: str) -> list[str]:
        return [tb.PYTHON, str(DEMO), "--home", str(self.home), *args]

    def once(self, *args: str, **settings: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv("--once", *args), env=self.env(**settings), capture_output=True, text=True, timeout=170
        )

    def serve(self, **settings: str) -> subprocess.Popen:
        """The demo left serving, in a session of its own as a terminal's job would be."""
        with (self.home / "demo.out").open("w") as out:
            proc = subprocess.Popen(
                self.argv(), env=self.env(**settings), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(lambda: "serving until Ctrl-C" in self.output() or proc.poll() is not None, timeout_s=120)
        assert proc.poll() is None, self.output()
        return proc

    def output(self) -> str:
        return (self.home / "demo.out").read_text()


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def gone(pids: list[int]) -> bool:
    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    return not any(alive(p) for p in pids)


@pytest.fixture
def demo(tmp_path) -> Demo:
    return Demo(tmp_path / "home")


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_busy_ports_are_refused_at_once_naming_port_and_variable(demo):
    for variable, port in (("ETL_API_PORT", demo.api_port), ("ETL_OPS_PORT", demo.ops_port + 2)):
        with socket.socket() as held:
            held.bind(("127.0.0.1", port))
            held.listen()
            out = demo.once()
        assert out.returncode == 2, out.stderr
        line = one_line(out.stderr)
        assert str(port) in line and variable in line
        assert not (demo.home / ".run" / "redis").exists()  # refused before starting anything


@pytest.mark.parametrize("base", ["65534", "65535", "65533x"])
def test_metrics_ports_past_65535_are_one_line_naming_the_variable(demo, base):
    """The demo takes ETL_OPS_PORT and the next two ports: each must be a port."""
    out = demo.once(ETL_OPS_PORT=base)
    assert out.returncode == 2, out.stderr
    line = one_line(out.stderr)
    assert "ETL_OPS_PORT" in line and base in line and "Traceback" not in out.stderr
    assert not (demo.home / ".run" / "redis").exists()  # refused before starting anything


def test_metrics_port_zero_is_announced_not_silently_replaced(demo):
    with socket.socket() as held:  # the API port taken: the demo stops right after its notes
        held.bind(("127.0.0.1", demo.api_port))
        held.listen()
        out = demo.once(ETL_OPS_PORT="0")
    assert out.returncode == 2, out.stderr
    assert "ETL_OPS_PORT=0 (off) is not honoured by the demo: /metrics on 9101-9103" in out.stderr


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ETL_PAGE_SIZE", "abc", "integer"),
        ("ETL_API_PORT", "abc", "integer"),
        ("ETL_LOG_FORMAT", "xml", "one of auto, json, console"),
        ("ETL_RETRY_DELAYS", "5,x", "seconds separated by commas"),
    ],
)
def test_a_typo_in_a_setting_is_one_line_with_exit_code_2(demo, variable, value, expected):
    out = demo.once(**{variable: value})
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert variable in line and repr(value) in line and expected in line


@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [
        ("extractor", "ETL_PAGE_SIZE", "abc"),
        ("transformer", "ETL_PII_POLICY", "hide"),
        ("saver", "ETL_SFTP_PORT", "99999"),
        ("api", "ETL_API_PORT", "abc"),
        ("api", "ETL_BLOCK_MS", "-1"),
        ("saver", "ETL_ENCRYPTION_RECIPIENTS", "garbage"),
        ("api", "ETL_API_CORS_ORIGINS", "localhost:5000"),
        ("api", "ETL_API_CORS_ORIGINS", "http://localhost:5000/"),
        ("api", "ETL_API_CORS_ORIGINS", "http://a.com,,http://b.com"),
        ("api", "ETL_API_CORS_ORIGINS", "*,http://a.com"),
    ],
)
def test_every_service_reports_a_bad_setting_in_one_line(tmp_path, service, variable, value):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    env.update({variable: value, "ETL_API_TOKEN": "t", "ETL_ENCRYPTION_ENABLED": "true"})
    out = subprocess.run([tb.PYTHON, "-m", service], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert variable in line and repr(value) in line and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("service", "misspelt", "meant", "others"),
    [
        ("extractor", "ETL_PAGE_SZIE", "ETL_PAGE_SIZE", {"ETL_API_PROT": "8001", "ETL_API_PORT": "8001"}),
        ("transformer", "ETL_PII_POLCY", "ETL_PII_POLICY", {"ETL_PAGE_SZIE": "5", "ETL_SFTP_HOST": "h"}),
        ("saver", "ETL_SFTP_HOTS", "ETL_SFTP_HOST", {"ETL_API_PROT": "8001", "ETL_PAGE_SIZE": "5"}),
        ("api", "ETL_API_PROT", "ETL_API_PORT", {"ETL_PAGE_SZIE": "5", "ETL_SCHEDULE": "0 3 * * *"}),
    ],
)
@pytest.mark.parametrize("where", ["environment", ".env"])
def test_every_service_warns_of_its_own_misspelt_setting_only(tmp_path, service, misspelt, meant, others, where):
    """One warning line for a near miss of the service's own setting; other services' names pass silently."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    # A bad log format stops the service right after reading its settings, with a line of its own.
    env.update({"ETL_LOG_FORMAT": "xml", "ETL_API_TOKEN": "t", **others})
    if where == ".env":
        (tmp_path / ".env").write_text(f"{misspelt}=1\n")
    else:
        env[misspelt] = "1"
    out = subprocess.run([tb.PYTHON, "-m", service], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines[0] == f"unknown setting {misspelt} (ignored); did you mean {meant}?", out.stderr
    assert len(lines) == 2 and "ETL_LOG_FORMAT" in lines[1]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ETL_API_PROT", "unknown setting ETL_API_PROT (did you mean ETL_API_PORT?)"),
        ("ETL_PAGE_SZIE", "unknown setting ETL_PAGE_SZIE (did you mean ETL_PAGE_SIZE?)"),
        ("ETL_NO_SUCH_THING", "unknown setting ETL_NO_SUCH_THING:"),
    ],
)
def test_the_demo_refuses_a_setting_no_service_reads(demo, given, expected):
    out = demo.once(**{given: "5"})
    assert out.returncode == 2, out.stderr
    assert expected in one_line(out.stderr)
    assert not (demo.home / ".run" / "redis").exists()


def test_dotenv_is_read_and_a_generated_token_is_kept(demo):
    (demo.home / ".env").write_text("ETL_API_TOKEN=from-dotenv\n")
    first = demo.once()
    assert first.returncode == 0, first.stderr
    assert "Authorization: Bearer from-dotenv (ETL_API_TOKEN)" in first.stdout
    # The local source breaks a few users by default: every file and table has content, and the summary says why.
    assert re.search(r"208 fetched, 200 valid, 8 invalid \(the local source breaks every 25th user", first.stdout)
    dlq = next((demo.home / "sftp_data" / "dlq").glob("invalid_users_*.jsonl"))
    assert len(dlq.read_text().splitlines()) == 8
    (demo.home / ".env").write_text("# no token\n")
    second, third = demo.once(), demo.once()
    token = re.search(r"Bearer (\S+) \(generated", second.stdout)
    assert token and f"Bearer {token.group(1)} (generated" in third.stdout
    assert "database/data.db keeps 2 run(s) of earlier demos; `make clean`" in third.stdout


def test_a_failing_source_gives_one_line_then_the_resume_is_announced(demo):
    dead = f"http://127.0.0.1:{tb.free_port()}/users"
    failed = demo.once(ETL_SOURCE_URL=dead, ETL_RETRY_DELAYS="0.05")
    assert failed.returncode == 1
    line = one_line(failed.stderr)
    assert "failed" in line and "ETL_SOURCE_URL" in line and "ETL_RETRY_DELAYS" in line and "make clean" in line
    assert "300" not in failed.stderr + failed.stdout  # no "will resume in 300 s" from a one-shot run
    run_id = re.search(r"run (\S+) failed", line).group(1)
    again = demo.once()
    assert again.returncode == 0, again.stderr
    assert f"resuming run {run_id} left unfinished by an earlier demo" in again.stdout
    assert f"run {run_id} succeeded" in again.stdout


def test_everything_dies_with_the_demo_whatever_the_signal(demo):
    proc = demo.serve()
    try:
        started = children(proc.pid)
        assert len(started) >= 6, demo.output()  # redis, sshd, source, transformer, saver, api, extractor
        # While it serves: every listed /metrics answers, the usual frontend origins pass CORS.
        for url in re.findall(r"(?:api|extractor|transformer|saver) (http://\S+/metrics)", demo.output()):
            assert httpx.get(url, timeout=10).status_code == 200, url
        api = f"http://127.0.0.1:{demo.api_port}"
        preflight = httpx.options(
            f"{api}/etl_runs",
            headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"},
            timeout=10,
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
        # A second demo in the same checkout refuses instead of taking the first one's keys and state.
        second = subprocess.run(demo.argv("--once"), env=demo.env(), capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and "another `make demo` is running" in one_line(second.stderr)
        proc.send_signal(signal.SIGHUP)  # the terminal was closed
        assert proc.wait(60) == 0
        wait_for(lambda: gone(started), timeout_s=20, what="the demo's processes to end after SIGHUP")
    finally:
        if proc.poll() is None:
            proc.kill()
    proc = demo.serve()
    try:
        started = children(proc.pid)
        proc.kill()  # SIGKILL: the demo cannot clean up; the kernel tells its children
        proc.wait()
        wait_for(lambda: gone(started), timeout_s=20, what="the demo's processes to end after SIGKILL")
        assert _bindable(demo.api_port)
    finally:
        for pid in children(proc.pid):
            os.kill(pid, signal.SIGKILL)


def test_docs_are_served_offline(tmp_path):
    port = tb.free_port()
    env = {"ETL_API_PORT": str(port), "ETL_API_AUTH": "none", "ETL_DB_PATH": str(tmp_path / "none.db")}
    api = tb.start_service("api", env, tmp_path)
    try:
        tb.wait_port(port, proc=api.popen)
        base = f"http://127.0.0.1:{port}"
        for page in ("/docs", "/redoc"):
            html = httpx.get(base + page, timeout=10).text
            assert not re.search(r"https?://", html), html  # nothing loaded from another host
            assets = re.findall(r'(?:src|href)="(/[^"]+)"', html)
            assert assets
            for asset in assets:
                assert httpx.get(base + asset, timeout=10).status_code == 200, asset
    finally:
        api.stop()


def test_keygen_note_matches_where_the_public_key_goes(tmp_path):
    out = subprocess.run(
        [tb.PYTHON, "-m", "saver", "keygen", "-o", str(tmp_path / "id")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.startswith("age1")
    assert "above" not in out.stderr and "standard output" in out.stderr
    keys = subprocess.run(
        [str(tb.ROOT / "scripts" / "gen-keys.sh"), str(tmp_path / "keys"), "127.0.0.1", "2222"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHON": tb.PYTHON},
    )
    assert keys.returncode == 0 and "above" not in keys.stdout + keys.stderr
    assert (tmp_path / "keys" / "age_recipients.txt").read_text().startswith("age1")


@pytest.mark.parametrize(("service", "variable"), [("transformer", "ETL_OPS_PORT"), ("api", "ETL_API_PORT")])
def test_a_service_on_a_busy_port_says_which_variable_moves_it(tmp_path, service, variable):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
        env.update({variable: str(port), "ETL_API_TOKEN": "t", "ETL_REDIS_URL": f"redis://127.0.0.1:{tb.free_port()}"})
        out = subprocess.run(
            [tb.PYTHON, "-m", service], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=60
        )
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert str(port) in line and variable in line


@pytest.mark.parametrize(
    ("variables", "arguments"),
    [
        ((), []),
        (("ONCE=1",), ["--once"]),
        (("BAD_EVERY=0",), ["--bad-every", "0"]),
        (("BAD_EVERY=7", "ONCE=1"), ["--once", "--bad-every", "7"]),
    ],
)
def test_make_demo_passes_its_variables_to_the_script(variables, arguments):
    """`make demo BAD_EVERY=0` is how the README turns the broken users off (the recipe, not run: -n)."""
    out = subprocess.run(
        ["make", "-n", "-s", "demo", *variables], cwd=tb.ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    line = next(line for line in out.stdout.splitlines() if "scripts/demo.py" in line)
    assert line.split()[line.split().index("scripts/demo.py") + 1 :] == arguments
