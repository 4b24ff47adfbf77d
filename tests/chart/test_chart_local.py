"""The chart's pods run as local processes complete a run: commands, environments, mounts and probes from the chart.

Rendered with the kind values (in-cluster Redis and SFTP, encryption on) and inline secrets. Redis runs
with the StatefulSet's own command and password; the in-cluster SFTP Service maps to the OpenSSH
fixture (atmoz/sftp cannot run here), the source to the local DummyJSON-compatible server.
"""

import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

import testbed as tb
from etl_common.db import connect_reader
from saver import crypto
from testbed import chart, engine
from tests.chart import k8s
from tests.chart.localrun import Cluster, Pod

# Where the private engine can run, tests/engine/test_chart_engine.py runs these pods as real containers.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(engine.usable() == "", reason="replaced by the container run in tests/engine"),
]
TOKEN = "chart-local-token-5c1e"


def _values(sftp, tmp: Path) -> dict:
    keys = sftp.keys_dir
    host_key = (keys / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    recipient = crypto.keygen(str(tmp / "age_identity.txt"))
    # A lookup that differs from the shipped one proves the transformer reads the mounted ConfigMap.
    departments = (
        (chart.CHART / "files" / "departments.csv").read_text().replace("Engineering,ENG", "Engineering,ENGK8S")
    )
    return chart._merge(
        k8s.VALUE_SETS["kind-values"],
        {
            "transformer": {"departmentsCsv": departments},
            "secrets": {
                "existingSecret": "",
                "apiToken": TOKEN,
                "redisPassword": "chartlocalredispw",
                "sftpPrivateKey": (keys / "id_ed25519").read_text(),
                # Pinned for the in-cluster Service name, as the chart's users write it.
                "sftpKnownHosts": f"etl-sftp {' '.join(host_key)}",
                "encryptionRecipients": recipient,
            },
            # The local sshd accepts only this machine's user.
            "sftp": {
                "existingSecret": "",
                "user": sftp.user,
                "authorizedKey": (keys / "id_ed25519.pub").read_text(),
                "hostKey": (keys / "ssh_host_ed25519_key").read_text(),
            },
        },
    )


def _probe_ok(cluster: Cluster, pod: Pod, container: dict, probe: dict) -> bool:
    """One probe as the kubelet runs it, against the pod's loopback ports."""
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    try:
        if "httpGet" in probe:
            port = pod.ports[ports.get(probe["httpGet"]["port"], probe["httpGet"]["port"])]
            r = httpx.get(f"http://127.0.0.1:{port}{probe['httpGet']['path']}", timeout=3)
            return 200 <= r.status_code < 400
        if "tcpSocket" in probe:
            tb.wait_port(pod.ports[ports[probe["tcpSocket"]["port"]]], timeout_s=0.5)
            return True
        cmd = list(probe["exec"]["command"])
        if cmd[0] == "redis-cli":  # the pod's loopback port of Redis
            cmd = [tb.which("redis-cli") or "redis-cli", "-p", str(pod.ports[6379]), *cmd[1:]]
        env = cluster.process_env(cluster.env(pod, container))
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=5)
        return out.returncode == 0 and "PONG" in out.stdout
    except (httpx.HTTPError, TimeoutError, OSError):
        return False


def _wait_probe(cluster: Cluster, pod: Pod, proc: tb.Proc, kind: str, timeout_s: float = 40) -> None:
    container = pod.container()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.alive(), f"{pod.name} exited {proc.popen.returncode}:\n{proc.output()[-3000:]}"
        if _probe_ok(cluster, pod, container, container[kind]):
            return
        time.sleep(0.3)
    raise AssertionError(f"{pod.name} {kind} failing after {timeout_s}s:\n{proc.output()[-3000:]}")


def _wait_runs(db: Path, count: int, procs: dict, timeout_s: float = 90) -> list[sqlite3.Row]:
    """Every run, once ``count`` of them have succeeded."""
    tb.wait_for_run(db, ("succeeded",), timeout_s, count=count, step_s=0.2, logs=lambda: tb.output_tails(procs))
    return tb.runs(db)


def test_chart_pods_complete_a_run_as_local_processes(tmp_path, sftp_server, make_source):
    source = make_source(count=208, bad_every=9)
    values = _values(sftp_server, tmp_path)
    objs = k8s.render_objects(values)
    cluster = Cluster(objs, tmp_path)
    cluster.external["etl-sftp"] = ("127.0.0.1", sftp_server.port)
    cluster.host_rewrites["etl-sftp"] = f"[127.0.0.1]:{sftp_server.port}"
    workloads = {k8s.component(w): w for w in k8s.workloads(objs) if not k8s.is_hook(w)}
    assert set(workloads) == {"redis", "sftp", "saver", "transformer", "extractor", "api"}

    # The SFTP pod is not run; its uploads volume is where the chroot's upload folder lands.
    sftp_pod = cluster.pod(workloads["sftp"])
    sftp_c = sftp_pod.container()
    upload = Path(cluster.local_path(sftp_pod, sftp_c, f"/home/{sftp_server.user}/upload"))

    workdir = tmp_path / "workdir"  # the images' WORKDIR: no .env, settings only from the environment
    workdir.mkdir()
    logs = tmp_path / "logs"
    procs: dict[str, tb.Proc] = {}
    pods: list[Pod] = []
    try:
        for name in ("redis", "saver", "transformer", "extractor", "api"):
            w = workloads[name]
            for replica in range(w["spec"].get("replicas", 1)):
                pod = cluster.pod(w, replica)
                env = cluster.env(pod, pod.container())
                if name == "saver":
                    # The saver's relative remote folder lives in the account's chroot home on atmoz/sftp.
                    assert env["ETL_SFTP_REMOTE_DIR"] == "upload" and env["ETL_ENCRYPTION_ENABLED"] == "true"
                if name == "extractor":
                    assert env["ETL_SOURCE_URL"] == "https://dummyjson.com/users"
                procs[pod.name] = _start_pod(cluster, pod, workdir, logs, source.url, upload)
                pods.append(pod)
                _wait_probe(cluster, pod, procs[pod.name], "startupProbe")
                if name != "api":  # the API is ready once the saver has made the database
                    _wait_probe(cluster, pod, procs[pod.name], "readinessProbe")

        # runOnStart in the kind values: the install alone performs the first run.
        saver_pod = next(p for p in pods if k8s.component(p.workload) == "saver")
        db = Path(cluster.env(saver_pod, saver_pod.container())["ETL_DB_PATH"])
        assert db.is_relative_to(tmp_path / "pvc")
        (run,) = _wait_runs(db, 1, procs)
        assert run["valid_count"] + run["invalid_count"] == 208 and run["invalid_count"] > 0
        uploaded = sorted(str(p.relative_to(upload)) for p in upload.rglob("*.age"))
        assert len(uploaded) == 3 and all(u.endswith(".jsonl.age") for u in uploaded)
        with closing(connect_reader(db)) as conn:
            codes = conn.execute(
                "SELECT DISTINCT department_code FROM processed_users WHERE department = 'Engineering'"
            )
            assert [c for (c,) in codes] == ["ENGK8S"]
        # Encrypted to the recipient from the chart's Secret: its identity reads the processed file back.
        processed = upload / f"{run['processed_file']}.age"
        plain = tmp_path / "processed.jsonl"
        crypto.decrypt_file(str(processed), str(plain), crypto.load_identities(str(tmp_path / "age_identity.txt")))
        assert len(plain.read_text().splitlines()) == run["valid_count"]

        # Every probe the chart declares answers at its path and port.
        for pod in pods:
            c = pod.container()
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                if kind in c:
                    assert _probe_ok(cluster, pod, c, c[kind]), f"{pod.name} {kind}"

        # Through the API's Service, with the token from the chart's Secret.
        host, port = cluster.resolve("etl-api", 80)
        api = f"http://{host}:{port}"
        assert httpx.get(f"{api}/etl_runs", timeout=10).status_code == 401
        listed = httpx.get(f"{api}/etl_runs", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert listed.status_code == 200 and run["run_id"] in listed.text

        # `helm test`: the test pod's own command, its Service URLs resolved like cluster DNS.
        _run_helm_test(cluster, objs, workdir)

        # extractor.mode=cronjob: the Job's one-shot command performs a second run.
        _run_cronjob_once(values, cluster, workdir, logs, source.url)
        runs = _wait_runs(db, 2, procs)
        assert runs[-1]["trigger"] == "schedule"

        # SIGTERM, as the kubelet sends it, ends every service within its terminationGracePeriodSeconds.
        for pod in reversed(pods):
            proc = procs[pod.name]
            proc.popen.send_signal(signal.SIGTERM)
            code = proc.popen.wait(pod.spec.get("terminationGracePeriodSeconds", 30))
            # uvicorn re-raises the signal after its graceful shutdown; redis-server exits 0.
            assert code == 0 or (code == -signal.SIGTERM and "shutdown complete" in proc.output()), pod.name
    finally:
        for proc in procs.values():
            proc.stop()


def _start_pod(cluster: Cluster, pod: Pod, workdir: Path, logs: Path, source_url: str, upload: Path) -> tb.Proc:
    """Start one pod; what only the cluster provides (the internet source, the chroot) is swapped here."""
    container = pod.container()
    env = cluster.env(pod, container)
    if "ETL_SOURCE_URL" in env:
        env["ETL_SOURCE_URL"] = source_url
    if "ETL_SFTP_REMOTE_DIR" in env:
        env["ETL_SFTP_REMOTE_DIR"] = str(upload)
    argv = cluster.argv(pod, container, env)
    if container["name"] == "redis":
        argv = [
            tb.which("redis-server") or "redis-server",
            *[cluster.local_path(pod, container, a) for a in argv[1:]],
            "--port",
            str(pod.ports[6379]),
            "--bind",
            "127.0.0.1",
        ]
    return tb.spawn(pod.name, argv, logs, cluster.process_env(env), cwd=workdir)


def _run_helm_test(cluster: Cluster, objs: list[dict], workdir: Path) -> None:
    (test_pod,) = [o for o in objs if o["kind"] == "Pod" and k8s.is_hook(o)]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    pod = cluster.pod(test_pod)
    c = pod.container()
    env = cluster.env(pod, c)
    url = urlsplit(env["API_URL"])
    host, port = cluster.resolve(url.hostname or "", url.port or 80)
    env["API_URL"] = f"http://{host}:{port}"
    env["WORKERS"] = " ".join(
        "{}:{}".format(*cluster.resolve(w.split(":")[0], int(w.split(":")[1]))) for w in env["WORKERS"].split()
    )
    assert len(env["WORKERS"].split()) == 3 and env["ETL_API_TOKEN"] == TOKEN
    out = subprocess.run(
        cluster.argv(pod, c, env), env=cluster.process_env(env), cwd=workdir, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "latest run:" in out.stdout and "succeeded" in out.stdout


def _run_cronjob_once(values: dict, cluster: Cluster, workdir: Path, logs: Path, source_url: str) -> None:
    objs = k8s.render_objects(chart._merge(values, {"extractor": {"mode": "cronjob"}}))
    (cj,) = [o for o in objs if o["kind"] == "CronJob"]
    pod = cluster.pod(cj)
    c = pod.container()
    env = cluster.env(pod, c)
    env["ETL_SOURCE_URL"] = source_url
    out = subprocess.run(
        cluster.argv(pod, c, env),
        env=cluster.process_env(env),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
