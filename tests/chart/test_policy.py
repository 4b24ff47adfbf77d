"""Policies on the rendered objects: Pod Security Standards, probes, resources, the SQLite rules, secrets, labels."""

import base64

import pytest
import yaml

import testbed.chart
from tests.chart import k8s

CHART = yaml.safe_load((testbed.chart.CHART / "Chart.yaml").read_text())

# Only sshd of the optional in-cluster SFTP server must start as root (chroot, switch to the account).
BASELINE_ONLY = {"sftp"}
# Capabilities the baseline Pod Security Standard allows to add (the container runtime's defaults).
BASELINE_CAPS = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}


def _effective(pod: dict, container: dict, field: str):
    value = container.get("securityContext", {}).get(field)
    return pod.get("securityContext", {}).get(field) if value is None else value


def _restricted_violations(pod: dict, c: dict) -> list[str]:
    """The checks of the restricted Pod Security Standard (Kubernetes docs, policy level 'restricted')."""
    sc = c.get("securityContext", {})
    bad = []
    if _effective(pod, c, "runAsNonRoot") is not True:
        bad.append("runAsNonRoot")
    if _effective(pod, c, "runAsUser") == 0:
        bad.append("runAsUser 0")
    if sc.get("allowPrivilegeEscalation") is not False:
        bad.append("allowPrivilegeEscalation")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        bad.append("capabilities.drop ALL")
    if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
        bad.append("capabilities.add")
    if (_effective(pod, c, "seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        bad.append("seccompProfile")
    if sc.get("privileged"):
        bad.append("privileged")
    if sc.get("readOnlyRootFilesystem") is not True:  # not in the standard; the house rule
        bad.append("readOnlyRootFilesystem")
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        bad.append("host namespaces")
    if any("hostPath" in v for v in pod.get("volumes", [])):
        bad.append("hostPath")
    return bad


def test_every_etl_container_meets_the_restricted_pod_security_standard(rendered):
    seen = 0
    for w, c in k8s.containers(rendered):
        if k8s.component(w) in BASELINE_ONLY:
            continue
        assert _restricted_violations(k8s.pod_spec(w), c) == [], f"{w['metadata']['name']}/{c['name']}"
        seen += 1
    assert seen >= 4


def test_in_cluster_sftp_meets_the_baseline_standard_with_the_fewest_privileges():
    objs = k8s.render_objects(k8s.VALUE_SETS["kind-values"])
    sftp = k8s.by_component(objs, "Deployment", "sftp")
    (c,) = k8s.pod_spec(sftp)["containers"]
    sc = c["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"] and set(sc["capabilities"]["add"]) <= BASELINE_CAPS
    assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged")
    assert k8s.pod_spec(sftp)["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"


def test_every_pod_has_no_service_account_token(rendered):
    for w in k8s.workloads(rendered):
        assert k8s.pod_spec(w)["automountServiceAccountToken"] is False, w["metadata"]["name"]
    (sa,) = [o for o in rendered if o["kind"] == "ServiceAccount"]
    assert sa["automountServiceAccountToken"] is False


def test_every_long_running_container_has_liveness_and_readiness(rendered):
    for w, c in k8s.containers(rendered):
        name = f"{w['metadata']['name']}/{c['name']}"
        if w["kind"] in ("Deployment", "StatefulSet"):
            assert c.get("livenessProbe") and c.get("readinessProbe"), name
        elif w["kind"] == "CronJob":
            assert c.get("livenessProbe"), name  # a Job is never "ready"; liveness catches a stuck run


@pytest.mark.parametrize("name", sorted(set(k8s.VALUE_SETS) - {"default"}))
def test_every_container_of_the_ci_values_has_requests_and_limits(name):
    """values.yaml recommends resources in comments (none by default); the ci/ values set them."""
    for w, c in k8s.containers(k8s.render_objects(k8s.VALUE_SETS[name])):
        res = c.get("resources", {})
        where = f"{w['metadata']['name']}/{c['name']}"
        assert res.get("requests", {}).get("memory") and res.get("limits", {}).get("memory"), where
        assert res["requests"].get("cpu"), where


def test_resources_are_left_to_the_cluster_by_default():
    """Helm's guidance: no resources unless asked (only the helm test pod, which the chart owns, sets them)."""
    objs = k8s.render_objects()
    assert [w["metadata"]["name"] for w, c in k8s.containers(objs) if "resources" in c and not k8s.is_hook(w)] == []


def test_http_probes_name_a_declared_port(rendered):
    for w, c in k8s.containers(rendered):
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c.get(kind) or {}
            for action in ("httpGet", "tcpSocket"):
                if action in probe:
                    assert probe[action]["port"] in ports, f"{w['metadata']['name']} {kind}"


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


@pytest.mark.parametrize("name", k8s.sets_on("sqlite"))
def test_saver_is_the_single_writer_with_recreate(name):
    rendered = k8s.render_objects(k8s.VALUE_SETS[name])
    saver = k8s.by_component(rendered, "Deployment", "saver")
    assert saver["spec"]["replicas"] == 1 and saver["spec"]["strategy"] == {"type": "Recreate"}
    c = k8s.pod_spec(saver)["containers"][0]
    db_path = _env(c)["ETL_DB_PATH"]
    assert any(db_path.startswith(m["mountPath"] + "/") and not m.get("readOnly") for m in c["volumeMounts"])
    claims = [o for o in rendered if o["kind"] == "PersistentVolumeClaim" and k8s.component(o) == "saver"]
    assert [c["spec"]["accessModes"] for c in claims] == [["ReadWriteOnce"]]


@pytest.mark.parametrize("name", k8s.sets_on("sqlite"))
def test_api_reads_the_saver_volume_read_only_on_the_saver_node(name):
    rendered = k8s.render_objects(k8s.VALUE_SETS[name])
    api = k8s.by_component(rendered, "Deployment", "api")
    saver = k8s.by_component(rendered, "Deployment", "saver")
    spec = k8s.pod_spec(api)
    (vol,) = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    saver_claims = [
        v["persistentVolumeClaim"]["claimName"] for v in k8s.pod_spec(saver)["volumes"] if "persistentVolumeClaim" in v
    ]
    assert vol["persistentVolumeClaim"] == {"claimName": saver_claims[0], "readOnly": True}
    mounts = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == vol["name"]]
    assert mounts and all(m["readOnly"] is True for m in mounts)
    # The API reads the very file the saver writes.
    assert _env(spec["containers"][0])["ETL_DB_PATH"] == _env(k8s.pod_spec(saver)["containers"][0])["ETL_DB_PATH"]
    assert any(_env(spec["containers"][0])["ETL_DB_PATH"].startswith(m["mountPath"] + "/") for m in mounts)
    (term,) = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == saver["spec"]["selector"]["matchLabels"]


def test_image_tags_are_pinned_never_latest(rendered):
    for w, c in k8s.containers(rendered):
        image = c["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", image
    etl_images = {
        c["image"] for _, c in k8s.containers(rendered) if "/etl-" in c["image"] or c["image"].startswith("etl-")
    }
    assert etl_images and all(i.endswith(":1.0.0") for i in etl_images)


def test_selectors_use_the_helper_labels_and_match_their_pods(rendered):
    for o in rendered:
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "etl" and labels["app.kubernetes.io/name"] == "etl"
        assert labels["app.kubernetes.io/managed-by"] == "Helm" and labels["helm.sh/chart"] == f"etl-{CHART['version']}"
        if o["kind"] in ("Deployment", "StatefulSet"):
            sel = o["spec"]["selector"]["matchLabels"]
            assert set(sel) == {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
            assert sel.items() <= k8s.pod_labels(o).items()
    workloads = [o for o in rendered if o["kind"] in ("Deployment", "StatefulSet")]
    for svc in (o for o in rendered if o["kind"] == "Service"):
        targets = [w for w in workloads if svc["spec"]["selector"].items() <= k8s.pod_labels(w).items()]
        assert len(targets) == 1, svc["metadata"]["name"]
    for pdb in (o for o in rendered if o["kind"] == "PodDisruptionBudget"):
        assert [w for w in workloads if pdb["spec"]["selector"]["matchLabels"].items() <= k8s.pod_labels(w).items()]


SECRET_VALUES = {
    "apiToken": "tok-3f9a7c1d5e",
    "redisPassword": "redispw4b8e2a",
    "sftpKeyPassphrase": "pass-phrase-77d1",
    "sftpPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nkeymaterial9c2f\n-----END OPENSSH PRIVATE KEY-----",
    "sftpKnownHosts": "[sftp.example.com]:22 ssh-ed25519 AAAAhostkey51aa",
    "encryptionRecipients": "age1recipient0b7e",
}


@pytest.mark.parametrize("redis", [True, False])
def test_secret_values_appear_only_in_secrets(redis):
    secrets = dict(SECRET_VALUES)
    if not redis:  # an external Redis: its URL (with the password) replaces the in-cluster password
        del secrets["redisPassword"]
        secrets["redisUrl"] = "redis://:urlpw6d0c@redis.example.com:6379/0"
    values = {
        "secrets": secrets,
        "redis": {"enabled": redis},
        "externalSftp": {"host": "sftp.example.com"},
        "api": {"ingress": {"enabled": True}},
    }
    objs = k8s.render_objects(values)
    needles = [v.splitlines()[1] if "\n" in v else v for v in secrets.values()]
    stored = ""
    for o in objs:
        if o["kind"] == "Secret":
            stored += "\n".join(base64.b64decode(v).decode() for v in o.get("data", {}).values())
            continue
        text = repr(o)
        assert not [n for n in needles if n in text], f"secret value in {o['kind']} {o['metadata']['name']}"
    assert all(n in stored for n in needles)
    # Containers get them by reference only.
    for _, c in k8s.containers(objs):
        for e in c.get("env", []):
            if (
                any(w in e["name"] for w in ("TOKEN", "PASSWORD", "PASSPHRASE", "KEY"))
                and e["name"] != "ETL_SFTP_KEY_PATH"
            ):
                assert "valueFrom" in e, e["name"]


def test_existing_secret_means_the_chart_makes_none_and_references_it():
    objs = k8s.render_objects(k8s.VALUE_SETS["kind-values"])
    assert not [o for o in objs if o["kind"] == "Secret"]
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for _, c in k8s.containers(objs)
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {"etl-secrets"}
