"""Runs the rendered chart's pods as local processes: what the kubelet and cluster DNS would do, done by hand.

Each pod's containers get their command, args and environment from the rendered objects (ConfigMap and
Secret references resolved, $(VAR) expanded, the downward API's pod name); their volumes become folders
(PVCs shared by claim name, Secret and ConfigMap items written as files); paths in the environment
follow the mounts. Services' DNS names map to loopback ports: every pod has its own network namespace
in Kubernetes, so here every pod gets its own free port for each container port it declares.
"""

import base64
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import testbed as tb
from tests.chart import k8s

VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in env values, command and args (unknown references stay as written)."""
    return VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), text)


@dataclass
class Pod:
    """One replica of a workload, with its folders and loopback ports."""

    name: str
    workload: dict
    root: Path
    ports: dict[int, int] = field(default_factory=dict)  # container port -> local port

    @property
    def spec(self) -> dict:
        return k8s.pod_spec(self.workload)

    def container(self, name: str | None = None) -> dict:
        cs = self.spec["containers"]
        return cs[0] if name is None else next(c for c in cs if c["name"] == name)


class Cluster:
    """The rendered objects of one release, and the local stand-ins of its pods and Services."""

    def __init__(self, objs: list[dict], tmp: Path) -> None:
        self.objs, self.tmp = objs, tmp
        self.configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objs if o["kind"] == "ConfigMap"}
        self.secrets = {
            o["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in o.get("data", {}).items()}
            for o in objs
            if o["kind"] == "Secret"
        }
        self.services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
        self.pods: dict[str, Pod] = {}
        # Service DNS name -> (host, port) of servers that are not chart pods here (the SFTP fixture).
        self.external: dict[str, tuple[str, int]] = {}
        # Known_hosts entries name the Service; the same mapping is applied to them.
        self.host_rewrites: dict[str, str] = {}

    # --- pods and volumes -------------------------------------------------------------------------
    def pod(self, workload: dict, replica: int = 0) -> Pod:
        # A Job's pod is named after its Job, never like the Deployment's pods of the same component.
        job = "-job" if workload["kind"] == "CronJob" else ""
        name = f"{workload['metadata']['name']}{job}-{replica}"
        if name not in self.pods:
            pod = Pod(name, workload, self.tmp / "pods" / name)
            for c in pod.spec["containers"]:
                for p in c.get("ports", []):
                    pod.ports[p["containerPort"]] = tb.free_port()
            self.pods[name] = pod
        return self.pods[name]

    def volume_dir(self, pod: Pod, volume: dict) -> Path:
        if "persistentVolumeClaim" in volume:
            d = self.tmp / "pvc" / volume["persistentVolumeClaim"]["claimName"]
        elif "emptyDir" in volume:
            d = pod.root / "emptyDir" / volume["name"]
        elif "secret" in volume:
            d = pod.root / "secret" / volume["name"]
            self._write_items(d, self.secrets[volume["secret"]["secretName"]], volume["secret"], 0o400)
        elif "configMap" in volume:
            d = pod.root / "configMap" / volume["name"]
            self._write_items(d, self.configmaps[volume["configMap"]["name"]], volume["configMap"], 0o444)
        else:
            raise NotImplementedError(volume)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _write_items(self, d: Path, data: dict[str, str], source: dict, mode: int) -> None:
        d.mkdir(parents=True, exist_ok=True)
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            text = data[item["key"]]
            if item["key"] == "known_hosts":
                text = self.rewrite_known_hosts(text)
            f = d / item["path"]
            f.write_text(text)
            f.chmod(mode)

    def mounts(self, pod: Pod, container: dict) -> dict[str, Path]:
        """mountPath -> local folder or file of every volume mount of ``container``."""
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        # A StatefulSet's claim templates give each pod its own PVC, named <template>-<pod>.
        for tpl in pod.workload["spec"].get("volumeClaimTemplates", []):
            name = tpl["metadata"]["name"]
            volumes[name] = {"name": name, "persistentVolumeClaim": {"claimName": f"{name}-{pod.name}"}}
        out = {}
        for m in container.get("volumeMounts", []):
            local = self.volume_dir(pod, volumes[m["name"]])
            if m.get("subPath"):
                local = local / m["subPath"]
                if "persistentVolumeClaim" in volumes[m["name"]] or "emptyDir" in volumes[m["name"]]:
                    local.mkdir(parents=True, exist_ok=True)
            out[m["mountPath"]] = local
        return out

    def local_path(self, pod: Pod, container: dict, path: str) -> str:
        for target, local in sorted(self.mounts(pod, container).items(), key=lambda kv: -len(kv[0])):
            if path == target or path.startswith(target.rstrip("/") + "/"):
                return str(local) + path[len(target) :]
        return path

    # --- environment ----------------------------------------------------------------------------
    def env(self, pod: Pod, container: dict) -> dict[str, str]:
        """The container's environment as the kubelet builds it, with paths and addresses made local."""
        return self.localize(pod, container, self.kube_env(pod, container))

    def kube_env(self, pod: Pod, container: dict) -> dict[str, str]:
        """The container's environment exactly as the kubelet builds it (envFrom, env, $(VAR), downward API)."""
        env: dict[str, str] = {}
        for src in container.get("envFrom", []):
            if "configMapRef" in src:
                env.update(self.configmaps[src["configMapRef"]["name"]])
            if "secretRef" in src:
                env.update(self.secrets[src["secretRef"]["name"]])
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = expand(e["value"], env)
                continue
            ref = e["valueFrom"]
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                data = self.secrets[r["name"]]
                if r["key"] not in data and r.get("optional"):
                    continue
                env[e["name"]] = data[r["key"]]
            elif "configMapKeyRef" in ref:
                env[e["name"]] = self.configmaps[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
            elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[e["name"]] = pod.name
            else:
                raise NotImplementedError(e)
        return env

    def localize(self, pod: Pod, container: dict, env: dict[str, str]) -> dict[str, str]:
        out = {}
        for key, value in env.items():
            value = self.local_path(pod, container, value)
            if value == "0.0.0.0":  # all interfaces of the pod: here only loopback
                value = "127.0.0.1"
            out[key] = value
        for host_var, port_var in (("ETL_OPS_HOST", "ETL_OPS_PORT"), ("ETL_API_HOST", "ETL_API_PORT")):
            if out.get(port_var) and int(out[port_var]) in pod.ports:
                out[port_var] = str(pod.ports[int(out[port_var])])
        if "ETL_REDIS_URL" in out:
            url = urlsplit(out["ETL_REDIS_URL"])
            host, port = self.resolve(url.hostname or "", url.port or 6379)
            netloc = url.netloc.rsplit("@", 1)[0] + "@" if "@" in url.netloc else ""
            out["ETL_REDIS_URL"] = urlunsplit(url._replace(netloc=f"{netloc}{host}:{port}"))
        if out.get("ETL_SFTP_HOST"):
            out["ETL_SFTP_HOST"], port = self.resolve(out["ETL_SFTP_HOST"], int(out["ETL_SFTP_PORT"]))
            out["ETL_SFTP_PORT"] = str(port)
        return out

    def argv(self, pod: Pod, container: dict, env: dict[str, str]) -> list[str]:
        argv = [expand(a, env) for a in container.get("command", []) + container.get("args", [])]
        if argv[0] == "python":
            argv[0] = sys.executable
        return argv

    def process_env(self, env: dict[str, str]) -> dict[str, str]:
        """The host's environment without its ETL_ variables (no .env leaks in), plus the container's."""
        return {k: v for k, v in os.environ.items() if not k.startswith("ETL_")} | env

    # --- DNS --------------------------------------------------------------------------------------
    def resolve(self, host: str, port: int) -> tuple[str, int]:
        """A Service name and port -> the loopback address of a pod behind it (or of an external stand-in)."""
        if host in self.external:
            return self.external[host]
        svc = self.services.get(host)
        if svc is None:
            return host, port
        (sp,) = [p for p in svc["spec"]["ports"] if p["port"] == port]
        for pod in self.pods.values():
            if svc["spec"]["selector"].items() <= k8s.pod_labels(pod.workload).items():
                target = sp.get("targetPort", sp["port"])
                for c in pod.spec["containers"]:
                    for p in c.get("ports", []):
                        if target in (p.get("name"), p["containerPort"]):
                            return "127.0.0.1", pod.ports[p["containerPort"]]
        raise LookupError(f"no running pod behind Service {host}:{port}")

    def rewrite_known_hosts(self, text: str) -> str:
        lines = []
        for line in text.splitlines():
            host, rest = line.split(" ", 1)
            lines.append(f"{self.host_rewrites.get(host, host)} {rest}")
        return "\n".join(lines) + "\n"
