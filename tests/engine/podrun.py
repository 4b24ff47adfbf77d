"""Runs the rendered chart's pods as containers on the private engine, doing what a kubelet and kube-proxy would.

Parsing of the rendered objects (ConfigMaps, Secrets, env, $(VAR), volumes' items) is tests/chart/localrun.py's.
Each pod is one container on a network the test creates, with the pod's securityContext (runAsUser and
runAsGroup, fsGroup as a supplementary group and as the group of its volumes, read-only root, dropped and
added capabilities, no privilege escalation), its environment, Secrets and ConfigMaps as files at their
paths (modes and fsGroup as the kubelet sets them), PVCs as named volumes (read-only where the pod says so),
emptyDir as a fresh folder. Services are DNS names: a network alias on the pods behind them when the
Service port is the container port, else a small forwarder (kube-proxy's part). Probes run from the host
against the pod's address (httpGet, tcpSocket) or inside it (exec), at their periods and thresholds.
"""

import os
import socket
import time
from pathlib import Path

import httpx

from testbed.engine import Engine
from tests.chart import k8s
from tests.chart.localrun import Cluster, Pod, expand

# kube-proxy's part for a Service whose port differs from the pod's: forward each listening port.
_FORWARDER = """
import asyncio, sys
async def pipe(r, w):
    try:
        while data := await r.read(65536):
            w.write(data); await w.drain()
    finally:
        w.close()
async def serve(port, host, target):
    async def handle(r, w):
        tr, tw = await asyncio.open_connection(host, target)
        await asyncio.gather(pipe(r, tw), pipe(tr, w))
    await (await asyncio.start_server(handle, "0.0.0.0", port)).serve_forever()
async def main():
    await asyncio.gather(*(serve(int(p), h, int(t)) for p, h, t in (a.split(":") for a in sys.argv[1:])))
asyncio.run(main())
"""


class PodRunner:
    """The pods of one rendered release as containers on network ``name`` of ``engine``."""

    def __init__(self, engine: Engine, objs: list[dict], tmp: Path, name: str, helper_image: str) -> None:
        self.engine, self.name, self.helper_image = engine, name, helper_image
        self.cluster = Cluster(objs, tmp)
        self.network = name
        self.started: dict[str, Pod] = {}  # container name -> pod
        self.volumes: set[str] = set()
        engine.docker("network", "create", "--label", f"etl.test={name}", self.network)

    # --- pods --------------------------------------------------------------------------------------
    def container_name(self, pod: Pod) -> str:
        return f"{self.name}-{pod.name}"

    def run(self, pod: Pod, restart: str = "always", env: dict[str, str] | None = None) -> str:
        """Start the pod's (single) container detached; returns the container's name."""
        spec = pod.spec
        c = pod.container()
        sc = {**spec.get("securityContext", {}), **c.get("securityContext", {})}
        kube_env = {**self.cluster.kube_env(pod, c), **(env or {})}
        name = self.container_name(pod)
        args = ["run", "-d", "--name", name, "--hostname", pod.name, "--network", self.network]
        args += ["--restart", restart, "--no-healthcheck", "--init"]
        for alias in self._aliases(pod):
            args += ["--network-alias", alias]
        if "runAsUser" in sc:
            args += ["--user", f"{sc['runAsUser']}:{sc.get('runAsGroup', 0)}"]
        if sc.get("runAsNonRoot"):
            user = sc.get("runAsUser")
            if user is None:
                user = self.engine.docker("image", "inspect", "-f", "{{.Config.User}}", c["image"]).stdout.strip()
            assert str(user).split(":")[0] not in ("", "0", "root"), f"{pod.name}: runAsNonRoot but runs as {user!r}"
        fs_group = spec.get("securityContext", {}).get("fsGroup")
        if fs_group is not None:
            args += ["--group-add", str(fs_group)]
        if sc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        for cap in sc.get("capabilities", {}).get("drop", []):
            args += ["--cap-drop", cap]
        for cap in sc.get("capabilities", {}).get("add", []):
            args += ["--cap-add", cap]
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        assert not sc.get("privileged"), f"{pod.name}: privileged"
        for key, value in kube_env.items():
            args += ["-e", f"{key}={value}"]
        args += self._mounts(pod, c, fs_group)
        command = [expand(a, kube_env) for a in c.get("command", [])]
        cmd_args = [expand(a, kube_env) for a in c.get("args", [])]
        if command:
            args += ["--entrypoint", command[0]]
        args += [c["image"], *command[1:], *cmd_args]
        self.engine.docker(*args)
        self.started[name] = pod
        return name

    def _mounts(self, pod: Pod, c: dict, fs_group: int | None) -> list[str]:
        volumes = {v["name"]: v for v in pod.spec.get("volumes") or []}
        for tpl in pod.workload["spec"].get("volumeClaimTemplates", []):
            n = tpl["metadata"]["name"]
            volumes[n] = {"name": n, "persistentVolumeClaim": {"claimName": f"{n}-{pod.name}"}}
        out: list[str] = []
        for m in c.get("volumeMounts", []):
            v = volumes[m["name"]]
            target = m["mountPath"]
            if "emptyDir" in v:
                out += ["--tmpfs", f"{target}:rw,mode=1777"]
            elif "persistentVolumeClaim" in v:
                assert not m.get("subPath"), "subPath on a PVC is not emulated"
                vol = f"{self.name}-pvc-{v['persistentVolumeClaim']['claimName']}"
                read_only = bool(m.get("readOnly") or v["persistentVolumeClaim"].get("readOnly"))
                self._claim(vol, None if read_only else fs_group)
                # volume-nocopy: a PVC never receives the image's files (nor their owner) at its mount path.
                opts = ",volume-nocopy" + (",readonly" if read_only else "")
                out += ["--mount", f"type=volume,src={vol},dst={target}{opts}"]
            elif "secret" in v or "configMap" in v:
                src = self._files(pod, v, fs_group)
                if m.get("subPath"):
                    src = src / m["subPath"]
                out += ["--mount", f"type=bind,src={src},dst={target},readonly"]
            else:
                raise NotImplementedError(v)
        return out

    def _claim(self, vol: str, fs_group: int | None) -> None:
        """A PVC as a named volume; fsGroup makes it group-owned and group-writable, as the kubelet does."""
        if vol not in self.volumes:
            self.engine.docker("volume", "create", "--label", f"etl.test={self.name}", vol)
            self.volumes.add(vol)
        if fs_group is not None:
            fix = f"chgrp -R {fs_group} /v && chmod -R g+rwX /v && find /v -type d -exec chmod g+s {{}} +"
            self.engine.docker(
                "run", "--rm", "--network", "none", "-v", f"{vol}:/v", "--entrypoint", "sh", self.helper_image,
                "-c", fix,
            )  # fmt: skip

    def _files(self, pod: Pod, volume: dict, fs_group: int | None) -> Path:
        """Secret or ConfigMap items as files; defaultMode, and with fsGroup root:fsGroup and group-readable."""
        d = self.cluster.volume_dir(pod, volume)
        source = volume.get("secret") or volume.get("configMap") or {}
        mode = source.get("defaultMode", 0o644)
        for f in d.iterdir():
            f.chmod(mode | (0o440 if fs_group is not None else 0))
            if fs_group is not None:
                os.chown(f, 0, fs_group)
        d.chmod(0o755)
        return d

    # --- Services ------------------------------------------------------------------------------------
    def _selected(self, svc: dict, pod: Pod) -> bool:
        return svc["spec"]["selector"].items() <= k8s.pod_labels(pod.workload).items()

    def _same_ports(self, svc: dict, pod: Pod) -> bool:
        return all(
            self._container_port(pod, sp.get("targetPort", sp["port"])) == sp["port"] for sp in svc["spec"]["ports"]
        )

    def _aliases(self, pod: Pod) -> list[str]:
        """Services whose name can point straight at this pod (their ports are its container ports)."""
        if k8s.is_hook(pod.workload):
            return []
        return [n for n, s in self.cluster.services.items() if self._selected(s, pod) and self._same_ports(s, pod)]

    def expose_services(self) -> None:
        """Forwarders for the Services whose port differs from their pods' (kube-proxy's part)."""
        for svc_name, svc in self.cluster.services.items():
            pods = [(n, p) for n, p in self.started.items() if self._selected(svc, p) and not k8s.is_hook(p.workload)]
            if not pods or self._same_ports(svc, pods[0][1]):
                continue
            assert len(pods) == 1, f"{svc_name}: a forwarder to one pod only"
            forwards = [
                f"{sp['port']}:{pods[0][0]}:{self._container_port(pods[0][1], sp.get('targetPort', sp['port']))}"
                for sp in svc["spec"]["ports"]
            ]
            self.engine.docker(
                "run", "-d", "--name", f"{self.name}-svc-{svc_name}", "--network", self.network,
                "--network-alias", svc_name, "--read-only", "--entrypoint", "python3", self.helper_image,
                "-c", _FORWARDER, *forwards,
            )  # fmt: skip

    @staticmethod
    def _container_port(pod: Pod, target: int | str) -> int:
        for c in pod.spec["containers"]:
            for p in c.get("ports", []):
                if target in (p.get("name"), p["containerPort"]):
                    return p["containerPort"]
        raise LookupError(f"{pod.name}: no container port {target}")

    # --- probes --------------------------------------------------------------------------------------
    def ip(self, container: str) -> str:
        fmt = f"{{{{(index .NetworkSettings.Networks {self.network!r}).IPAddress}}}}".replace("'", '"')
        return self.engine.docker("inspect", "-f", fmt, container).stdout.strip()

    def probe(self, container: str, kind: str) -> bool:
        """One run of the container's ``kind`` probe, as the kubelet does it."""
        c = self.started[container].container()
        probe = c[kind]
        timeout = probe.get("timeoutSeconds", 1)
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        try:
            if "httpGet" in probe:
                port = ports.get(probe["httpGet"]["port"], probe["httpGet"]["port"])
                r = httpx.get(f"http://{self.ip(container)}:{port}{probe['httpGet']['path']}", timeout=timeout)
                return 200 <= r.status_code < 400
            if "tcpSocket" in probe:
                port = ports.get(probe["tcpSocket"]["port"], probe["tcpSocket"]["port"])
                with socket.create_connection((self.ip(container), port), timeout=timeout):
                    return True
            out = self.engine.docker("exec", container, *probe["exec"]["command"], check=False, timeout=timeout + 5)
            return out.returncode == 0
        except (httpx.HTTPError, OSError):
            return False

    def wait_probe(self, container: str, kind: str, timeout_s: float | None = None) -> None:
        """Probe at the probe's period until it passes; fails after failureThreshold periods (or timeout_s)."""
        probe = self.started[container].container()[kind]
        period = probe.get("periodSeconds", 10)
        limit = timeout_s or probe.get("initialDelaySeconds", 0) + period * probe.get("failureThreshold", 3)
        deadline = time.monotonic() + limit
        while True:
            if self.probe(container, kind):
                return
            if time.monotonic() > deadline:
                logs = self.engine.docker("logs", "--tail", "80", container, check=False)
                raise AssertionError(f"{container}: {kind} failing after {limit}s\n{logs.stdout}{logs.stderr}")
            time.sleep(period)

    def restarts(self, container: str) -> int:
        return int(self.engine.docker("inspect", "-f", "{{.RestartCount}}", container).stdout.strip())

    def logs(self) -> str:
        out = []
        for n in self.started:
            r = self.engine.docker("logs", "--tail", "40", n, check=False)
            out.append(f"--- {n}\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
        return "\n".join(out)

    def close(self) -> None:
        """Remove the containers, volumes and the network of this release."""
        ids = self.engine.docker("ps", "-aq", "--filter", f"network={self.network}", check=False).stdout.split()
        if ids:
            self.engine.docker("rm", "-f", *ids, check=False)
        for vol in self.volumes:
            self.engine.docker("volume", "rm", "-f", vol, check=False)
        self.engine.docker("network", "rm", self.network, check=False)
