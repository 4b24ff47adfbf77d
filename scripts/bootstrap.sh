#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks (when root) and creates the virtual environment.
#   scripts/bootstrap.sh           what the demo and most tests need
#   scripts/bootstrap.sh --test    also what the rest of the tests need (Prometheus, age; as root docker.io
#                                  and mmdebstrap for tests/engine); without root
#                                  it says which tests will be skipped and how to install what they need
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
if [ "${1:-}" = "--test" ]; then
  # Optional for the tests: without them the alert-rule, scrape and age-interop tests are skipped.
  optional=()
  { command -v prometheus && command -v promtool; } >/dev/null 2>&1 || optional+=(prometheus)
  command -v age >/dev/null 2>&1 || optional+=(age)
  # tests/engine (root only: it starts its own dockerd): Docker's engine, mmdebstrap for the stand-in bases.
  if [ "$(id -u)" = 0 ]; then
    command -v dockerd >/dev/null 2>&1 || optional+=(docker.io)
    command -v mmdebstrap >/dev/null 2>&1 || optional+=(mmdebstrap)
  fi
  if [ ${#optional[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing for the tests: ${optional[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null
      systemctl disable --now prometheus docker.socket docker containerd >/dev/null 2>&1 || true
    else
      echo "not installed: ${optional[*]} (not root); the tests that need them will be skipped" \
        "(Prometheus: alert rules and a real scrape; age: interop of the encrypted files)." \
        "Install with: sudo apt-get install -y ${optional[*]}" >&2
    fi
  fi
fi
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
# Headless Chromium and its WebDriver: only the web console's browser tests need them.
browser=()
command -v chromium >/dev/null 2>&1 || browser+=(chromium)
command -v chromedriver >/dev/null 2>&1 || browser+=(chromium-driver)
if [ ${#browser[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${browser[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${browser[@]}" >/dev/null
  else
    echo "missing: ${browser[*]} (the browser tests need them): sudo apt-get install -y ${browser[*]}" >&2
  fi
fi
if [ ! -x .venv/bin/python ] || [ requirements.lock -nt .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  python3 -m venv .venv
  # The project with its dev extra, every package at the version of the lock.
  .venv/bin/pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
  touch .venv/.installed
fi
