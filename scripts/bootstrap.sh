#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks (when root) and creates the virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    # Packages start their daemons; the project runs its own on other ports.
    systemctl disable --now redis-server ssh >/dev/null 2>&1 || true
  else
    echo "missing: ${need[*]}; install them with: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi
if [ ! -x .venv/bin/python ] || [ requirements.txt -nt .venv/.installed ] || [ requirements-dev.txt -nt .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  touch .venv/.installed
fi
