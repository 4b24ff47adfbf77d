"""The chart's pods run as containers on a real engine, driven by the rendered manifests, and complete a run.

Rendered with the default values and with ci/kind-values.yaml (in-cluster SFTP, encryption on), secrets
given inline (as `make kind-up` gives them in Secrets). What only a cluster provides is swapped: the
source URL points at a DummyJSON-compatible server on the test's network. Each pod runs with its
securityContext, env, mounted Secrets/ConfigMaps and volumes (tests/engine/podrun.py); Services are
network names; the startup and readiness probes gate as the kubelet's do; then a run succeeds, every
probe answers, no container restarted, the `helm test` pod passes, the CronJob's pod performs a run,
and every pod stops on SIGTERM within its grace period.
"""

import json
import secrets
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import pytest

from testbed import chart
from tests.chart import k8s
from tests.engine.conftest import record
from tests.engine.podrun import PodRunner

pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.timeout(900)]
USERS = 1000
BAD_EVERY = 9
ROOT = chart.ROOT


def _values(name: str, keys: Path, token: str) -> dict:
    host_key = (keys / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    return chart._merge(
        k8s.VALUE_SETS[name],
        {
            "extractor": {"sourceUrl": "http://source:8001/users"},
            "secrets": {
                "existingSecret": "",
                "apiToken": token,
                "redisPassword": secrets.token_hex(16),
                "sftpPrivateKey": (keys / "id_ed25519").read_text(),
                # Pinned for the in-cluster Service name, as `make kind-up` does.
                "sftpKnownHosts": f"etl-sftp {' '.join(host_key)}",
                "encryptionRecipients": (keys / "age_recipients.txt").read_text(),
            },
            "sftp": {
                "existingSecret": "",
                "authorizedKey": (keys / "id_ed25519.pub").read_text(),
                "hostKey": (keys / "ssh_host_ed25519_key").read_text(),
            },
        },
    )


def _newest_ended_run(api: str, auth: dict, timeout_s: float, other_than: str | None = None) -> dict | None:
    """The newest run the API lists once it has ended (succeeded or failed), other than ``other_than``; None when
    none has after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = httpx.get(f"{api}/etl_runs", headers=auth, timeout=10)
        items = listed.json() if listed.status_code == 200 else []
        items = items.get("items", items) if isinstance(items, dict) else items
        if items and items[0]["run_id"] != other_than and items[0]["status"] in ("succeeded", "failed"):
            return items[0]
        time.sleep(1)
    return None


@pytest.mark.parametrize("values_name", ["kind-values", "default"])
def test_chart_pods_run_on_the_engine(engine, tmp_path, values_name):
    started = time.monotonic()
    keys = tmp_path / "keys"
    subprocess.run(
        [str(ROOT / "scripts" / "gen-keys.sh"), str(keys), "etl-sftp", "22"],
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
        check=True,
        capture_output=True,
    )
    token = secrets.token_urlsafe(24)
    values = _values(values_name, keys, token)
    objs = k8s.render_objects(values)
    workloads = {k8s.component(w): w for w in k8s.workloads(objs) if not k8s.is_hook(w)}
    uploads_expected = values.get("sftp", {}).get("enabled", False)

    runner = PodRunner(engine, objs, tmp_path / "pods", f"etl-chart-{values_name}", engine.python_image)
    try:
        # Not part of the chart: the source every pod of the release would reach on the internet.
        engine.docker(
            "run", "-d", "--name", f"{runner.name}-source", "--network", runner.network, "--network-alias",
            "source", "--read-only", "--no-healthcheck", "--user", "65534:65534", "-e", "PYTHONPATH=/src", "-v",
            f"{ROOT / 'services' / 'dummyjson'}:/src/dummyjson:ro", "--entrypoint", "python3", "etl-api:1.0.0",
            "-m", "dummyjson", "--host", "0.0.0.0", "--port", "8001", "--count", str(USERS),
            "--bad-every", str(BAD_EVERY),
        )  # fmt: skip
        # The kubelet starts every pod at once; the probes and the services' own retries do the ordering.
        containers = []
        for component in ("redis", "sftp", "saver", "transformer", "extractor", "api"):
            if component not in workloads:
                continue
            w = workloads[component]
            for replica in range(w["spec"].get("replicas", 1)):
                containers.append(runner.run(runner.cluster.pod(w, replica)))
        runner.expose_services()
        for c in containers:
            runner.wait_probe(c, "startupProbe")
        for c in containers:
            runner.wait_probe(c, "readinessProbe", timeout_s=120)

        # runOnStart: the install performs a run; the API (through its Service's pod) reports it.
        api_pod = next(c for c in containers if runner.started[c].workload is workloads["api"])
        api = f"http://{runner.ip(api_pod)}:8000"
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{api}/etl_runs", timeout=10).status_code == 401
        run = _newest_ended_run(api, auth, timeout_s=240)
        assert run is not None and run["status"] == "succeeded", f"{run}\n{runner.logs()}"
        assert run["valid_count"] + run["invalid_count"] == USERS and run["invalid_count"] == USERS // BAD_EVERY

        decrypted = 0
        if uploads_expected:
            # The SFTP server's PVC holds the three encrypted files; the age identity reads them back.
            out = tmp_path / "uploads"
            out.mkdir()
            tar = engine.docker(
                "run", "--rm", "--network", "none", "-v", f"{runner.name}-pvc-etl-sftp:/v:ro", "--entrypoint",
                "tar", engine.python_image, "-C", "/v", "-cf", "-", ".", text=False,
            )  # fmt: skip
            (tmp_path / "uploads.tar").write_bytes(tar.stdout)
            with tarfile.open(tmp_path / "uploads.tar") as tf:
                tf.extractall(out, filter="data")
            files = sorted(out.rglob("*.age"))
            assert len(files) == 3, files
            for f in files:
                plain = f.with_suffix(".plain")
                subprocess.run(
                    [sys.executable, "-m", "saver", "decrypt", "-i", str(keys / "age_identity.txt"), str(f),
                     str(plain)],
                    check=True, capture_output=True,
                )  # fmt: skip
                rows = [json.loads(line) for line in plain.read_text().splitlines()]
                if "processed_users" in str(f):
                    assert len(rows) == run["valid_count"]
                elif "dlq" in str(f):
                    assert len(rows) == run["invalid_count"]
                else:
                    assert len(rows) == USERS
                decrypted += 1

        # Every probe the chart declares answers, and no container was restarted.
        for c in containers:
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                if kind in runner.started[c].container():
                    assert runner.probe(c, kind), f"{c} {kind}"
            assert runner.restarts(c) == 0, f"{c} restarted\n{runner.logs()}"

        # `helm test`: the test pod's own command, Services by name, restartPolicy Never.
        (test_pod,) = [o for o in objs if o["kind"] == "Pod" and k8s.is_hook(o)]
        tester = runner.run(runner.cluster.pod(test_pod), restart="no")
        code = int(engine.docker("wait", tester, timeout=120).stdout.strip())
        logs = engine.docker("logs", tester)
        assert code == 0, logs.stdout + logs.stderr
        assert "latest run:" in logs.stdout and "succeeded" in logs.stdout

        # extractor.mode=cronjob: the Job's pod (its own rendering) performs a second run and exits 0.
        cron_objs = k8s.render_objects(chart._merge(values, {"extractor": {"mode": "cronjob"}}))
        (cronjob,) = [o for o in cron_objs if o["kind"] == "CronJob"]
        job = runner.run(runner.cluster.pod(cronjob), restart="no")
        code = int(engine.docker("wait", job, timeout=300).stdout.strip())
        assert code == 0, engine.docker("logs", "--tail", "60", job).stderr
        # The Job ends with the extraction; the saver finishes the run (files, report, upload) after it.
        latest = _newest_ended_run(api, auth, timeout_s=120, other_than=run["run_id"])
        assert latest is not None and latest["status"] == "succeeded", latest

        # SIGTERM, as the kubelet sends it: every service ends within its grace period, by itself.
        for c in reversed(containers):
            grace = runner.started[c].spec.get("terminationGracePeriodSeconds", 30)
            engine.docker("stop", "-t", str(grace), c, timeout=grace + 30)
            code = int(engine.docker("inspect", "-f", "{{.State.ExitCode}}", c).stdout.strip())
            # uvicorn re-raises SIGTERM after its graceful shutdown (143); 137 would be the SIGKILL.
            assert code in (0, 143), f"{c} exited {code}\n{runner.logs()}"
    except BaseException:
        print(runner.logs())
        raise
    finally:
        runner.close()
    left = engine.docker("ps", "-aq", "--filter", f"network={runner.network}").stdout.split()
    assert not left and not engine.docker("volume", "ls", "-q", "--filter", f"label=etl.test={runner.name}").stdout
    record(
        f"chart ({values_name}): run {run['run_id']} succeeded, valid={run['valid_count']} "
        f"invalid={run['invalid_count']}, {decrypted} files decrypted, helm test passed, "
        f"cronjob run {latest['run_id']}, {time.monotonic() - started:.0f}s",
        f"chart {values_name} run {run['run_id']} valid={run['valid_count']} invalid={run['invalid_count']}",
    )
