#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks (when root) and creates the virtual environment.
#   scripts/bootstrap.sh           the runtime: what `make demo` runs (Redis, OpenSSH, the project's runtime
#                                  packages at the lock's versions); no test tool, no browser
#   scripts/bootstrap.sh --dev     also the test tools and linters (the dev extra): make lint, format, lock, ...
#   scripts/bootstrap.sh --test    --dev, and what the rest of the tests need: Chromium and its driver (browser
#                                  tests), Prometheus, age; as root docker.io and mmdebstrap for tests/engine.
#                                  Without root it says which tests will be skipped and how to install what they need
# Each step says what it installs before it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
case "$mode" in "" | --dev | --test) ;; *) echo "usage: scripts/bootstrap.sh [--dev|--test]" >&2; exit 2 ;; esac

# Python 3.11 or newer (pyproject.toml's requires-python): the pinned packages of requirements.lock need it.
python=""
for candidate in python3 python3.13 python3.12 python3.11; do
  if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    python="$candidate"
    break
  fi
done
if [ -z "$python" ]; then
  found="$(python3 --version 2>/dev/null || echo "no python3")"
  echo "Python 3.11 or newer is needed (found: $found); install python3.11 (or newer) and run again" >&2
  exit 1
fi

apt_install() {  # apt_install "what for" [--no-install-recommends] packages...
  local why="$1"
  shift
  echo "installing $why: ${*#--no-install-recommends}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
root_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
"$python" -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if root_apt; then
    apt_install "for the services" "${need[@]}"
    # Packages start their daemons; the project runs its own on other ports.
    systemctl disable --now redis-server ssh >/dev/null 2>&1 || true
  else
    echo "missing: ${need[*]}; install them with: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi

if [ "$mode" = "--test" ]; then
  # Optional for the tests: without them the alert-rule, scrape, age-interop and browser tests are skipped.
  optional=()
  { command -v prometheus && command -v promtool; } >/dev/null 2>&1 || optional+=(prometheus)
  command -v age >/dev/null 2>&1 || optional+=(age)
  # Headless Chromium and its WebDriver: the web console's browser tests.
  command -v chromium >/dev/null 2>&1 || optional+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || optional+=(chromium-driver)
  # PostgreSQL's server binaries: the tests start their own clusters in temporary folders (testbed/postgres.py).
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 || optional+=(postgresql)
  # tests/engine (root only: it starts its own dockerd): Docker's engine, mmdebstrap for the stand-in bases.
  if [ "$(id -u)" = 0 ]; then
    command -v dockerd >/dev/null 2>&1 || optional+=(docker.io)
    command -v mmdebstrap >/dev/null 2>&1 || optional+=(mmdebstrap)
  fi
  if [ ${#optional[@]} -gt 0 ]; then
    if root_apt; then
      apt_install "for the tests" --no-install-recommends "${optional[@]}"
      systemctl disable --now prometheus docker.socket docker containerd postgresql >/dev/null 2>&1 || true
    else
      echo "not installed: ${optional[*]} (not root); the tests that need them will be skipped" \
        "(Prometheus: alert rules and a real scrape; age: interop of the encrypted files; chromium: the console;" \
        "postgresql: the tests on PostgreSQL)." \
        "Install with: sudo apt-get install -y ${optional[*]}" >&2
    fi
  fi
fi

# .venv: the runtime (.installed), plus the dev extra (.installed-dev) for --dev and --test; redone when the
# lock or pyproject.toml is newer than the stamp.
fresh() { [ -x .venv/bin/python ] && [ -e "$1" ] && [ "$1" -nt requirements.lock ] && [ "$1" -nt pyproject.toml ]; }
if [ -n "$mode" ]; then
  if ! fresh .venv/.installed-dev; then
    echo "installing into .venv: the runtime and the test tools (the dev extra: pytest, ruff, mypy, selenium, ...)" \
      "at the versions of requirements.lock"
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
    touch .venv/.installed .venv/.installed-dev
  fi
elif ! fresh .venv/.installed && ! fresh .venv/.installed-dev; then
  echo "installing into .venv: the runtime (the services' and the demo's packages at the versions of" \
    "requirements.lock; no test tools: make test adds them)"
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -c requirements.lock -e .
  touch .venv/.installed
fi
