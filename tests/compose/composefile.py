"""Reads docker-compose.yml as Compose would: .env parsing, ${VAR} interpolation, each service's environment."""

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SERVICES = ("extractor", "transformer", "saver", "api")


class InterpolationError(ValueError):
    """A ${VAR:?message} whose variable is missing, or a malformed expression."""


def parse_dotenv(text: str) -> dict[str, str]:
    """KEY=VALUE lines as Compose reads them: comments, blanks, optional quotes, ' #' comments after unquoted values."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"not KEY=VALUE: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].rstrip()
        out[key.strip().removeprefix("export ").strip()] = value
    return out


_EXPR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, $VAR, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, ${VAR:+alt}, $$."""

    def one(m: re.Match) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4) or ""
        present, current = name in env, env.get(name, "")
        usable = present and (current != "" or not (op or "").startswith(":"))
        if op in (":-", "-"):
            return current if usable else arg
        if op in (":?", "?"):
            if not usable:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return current
        if op in (":+", "+"):
            return arg if usable else ""
        return current

    return _EXPR.sub(one, value)


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    """Interpolate every string value (not keys) of a parsed YAML tree."""
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def load_raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def load(env: dict[str, str]) -> dict:
    """The compose model after interpolation with ``env`` (what Compose does with the project's .env)."""
    return interpolate_tree(load_raw(), env)


def example_env() -> dict[str, str]:
    return parse_dotenv((ROOT / ".env.example").read_text())


def service_env(model: dict, name: str, env_file: dict[str, str]) -> dict[str, str]:
    """A container's environment: env_file first, then ``environment`` on top (Compose's precedence)."""
    svc = model["services"][name]
    out = dict(env_file) if svc.get("env_file") else {}
    environment = svc.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    out.update({k: "" if v is None else str(v) for k, v in environment.items()})
    return out


@dataclass
class Mount:
    source: str
    target: str
    read_only: bool


def mounts(svc: dict) -> list[Mount]:
    """Bind mounts of a service, short or long syntax (named volumes are skipped)."""
    out = []
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            if not parts[0].startswith((".", "/")):
                continue
            out.append(Mount(parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
        elif v.get("type") == "bind":
            out.append(Mount(v["source"], v["target"], bool(v.get("read_only"))))
    return out


@dataclass
class Dockerfile:
    """What the tests need from the Dockerfile: stages, final CMD, HEALTHCHECK, user."""

    path: Path
    text: str

    @property
    def instructions(self) -> list[tuple[str, str]]:
        joined = re.sub(r"\\\n", " ", self.text)
        out = []
        for line in joined.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                word, _, rest = line.partition(" ")
                out.append((word.upper(), rest.strip()))
        return out

    def final(self) -> list[tuple[str, str]]:
        """Instructions of the last stage."""
        ins = self.instructions
        last = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
        return ins[last:]

    def stages(self) -> list[str]:
        return [arg for w, arg in self.instructions if w == "FROM"]

    def exec_form(self, word: str) -> list[str]:
        import json

        args = [a for w, a in self.final() if w == word]
        if not args:
            return []
        arg = args[-1]
        if word == "HEALTHCHECK":
            arg = arg[arg.index("CMD") + 3 :].strip()
        return json.loads(arg) if arg.startswith("[") else shlex.split(arg)


DOCKERFILE = ROOT / "Dockerfile"


def dockerfile(name: str) -> Dockerfile:
    """The one Dockerfile as the build of service ``name`` reads it (its SERVICE argument substituted)."""
    text = DOCKERFILE.read_text()
    return Dockerfile(DOCKERFILE, text.replace("${SERVICE}", name))
