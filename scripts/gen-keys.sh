#!/usr/bin/env bash
# Generates, once, the SFTP client key, the SFTP server's host keys, the client's known_hosts and
# the age key pair that encrypts the uploaded files.
#   scripts/gen-keys.sh [DIR] [HOST] [PORT]       (defaults: ssh_keys sftp 22)
#   SFTP_KEY_PASSPHRASE=... protects the client key with a passphrase.
# Idempotent: existing keys are kept (so pinned host keys stay valid); known_hosts is rewritten.
set -euo pipefail
dir=${1:-ssh_keys}
host=${2:-sftp}
port=${3:-22}
mkdir -p "$dir"
chmod 700 "$dir"
if [ ! -f "$dir/id_ed25519" ]; then
  ssh-keygen -q -t ed25519 -N "${SFTP_KEY_PASSPHRASE:-}" -C etl-saver -f "$dir/id_ed25519"
  echo "created client key $dir/id_ed25519"
fi
# atmoz/sftp reads the user's public keys from this name.
cp "$dir/id_ed25519.pub" "$dir/sftp_user.pub"
for type in ed25519 rsa; do
  if [ ! -f "$dir/ssh_host_${type}_key" ]; then
    ssh-keygen -q -t "$type" -N "" -C sftp-host -f "$dir/ssh_host_${type}_key"
    echo "created host key $dir/ssh_host_${type}_key"
  fi
done
if [ "$port" = "22" ]; then entry="$host"; else entry="[$host]:$port"; fi
: > "$dir/known_hosts"
for type in ed25519 rsa; do
  printf '%s %s\n' "$entry" "$(cut -d' ' -f1,2 "$dir/ssh_host_${type}_key.pub")" >> "$dir/known_hosts"
done
# The age key pair for file encryption: the saver gets only the public half (age_recipients.txt).
python=${PYTHON:-.venv/bin/python}
if [ ! -f "$dir/age_identity.txt" ] && [ -x "$python" ]; then
  # keygen's own note speaks of its standard output, which goes to the file here: say where instead.
  if ! note=$("$python" -m saver keygen -o "$dir/age_identity.txt" 2>&1 > "$dir/age_recipients.txt"); then
    echo "$note" >&2
    exit 1
  fi
  echo "created age identity $dir/age_identity.txt (keep it safe: it decrypts the uploaded files)"
  echo "and its public key $dir/age_recipients.txt (ETL_ENCRYPTION_RECIPIENTS_FILE of the saver)"
fi
chmod 600 "$dir"/id_ed25519 "$dir"/ssh_host_*_key
echo "known_hosts for $entry written to $dir/known_hosts"
