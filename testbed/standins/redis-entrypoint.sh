#!/bin/sh
# As the official image's entrypoint: protected mode off unless configured, root drops to redis.
set -eu
if [ "${1:-}" = "redis-server" ]; then
  case " $* " in *" --protected-mode "*) ;; *) set -- "$@" --protected-mode no ;; esac
  if [ "$(id -u)" = 0 ]; then
    chown -R redis:redis . 2>/dev/null || true
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
exec "$@"
