#!/usr/bin/env bash
# The chart on a local kind cluster (kind-config.yaml): `scripts/kind.sh up` or `scripts/kind.sh down`.
# up: cluster, the four images built and loaded, ingress-nginx, freshly generated keys in Secrets,
# helm install with charts/etl/ci/kind-values.yaml, helm test, and the API's URL.
# Needs docker, kind, kubectl, helm and ssh-keygen; docs/kubernetes.md walks through it.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-etl}
NS=${KIND_NAMESPACE:-etl}
RELEASE=${KIND_RELEASE:-etl}
PY=${PY:-.venv/bin/python}
# ingress-nginx's manifest for kind; pinned so a new release cannot change the cluster under us.
INGRESS_NGINX=${INGRESS_NGINX_VERSION:-controller-v1.12.1}
TAG=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/etl/Chart.yaml)
KEYS=.run/kind/keys

need() { command -v "$1" >/dev/null || { echo "error: $1 is not installed" >&2; exit 2; }; }

up() {
  for tool in docker kind kubectl helm ssh-keygen; do need "$tool"; done
  if ! kind get clusters | grep -qx "$CLUSTER"; then
    kind create cluster --name "$CLUSTER" --config kind-config.yaml
  fi
  for svc in extractor transformer saver api; do
    docker build --build-arg SERVICE="$svc" -t "etl-$svc:$TAG" .
    kind load docker-image --name "$CLUSTER" "etl-$svc:$TAG"
  done

  kubectl apply -f "https://raw.githubusercontent.com/kubernetes/ingress-nginx/$INGRESS_NGINX/deploy/static/provider/kind/deploy.yaml"
  kubectl wait --namespace ingress-nginx --for=condition=ready pod \
    --selector=app.kubernetes.io/component=controller --timeout=300s

  # The in-cluster SFTP server (sshd chroot) needs root: the namespace enforces "baseline" and warns
  # about anything below "restricted", which every other pod meets.
  kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
  kubectl label --overwrite namespace "$NS" \
    pod-security.kubernetes.io/enforce=baseline pod-security.kubernetes.io/warn=restricted

  secrets
  helm upgrade --install "$RELEASE" charts/etl --namespace "$NS" \
    -f charts/etl/ci/kind-values.yaml --wait --timeout 10m
  helm test "$RELEASE" --namespace "$NS" --logs
  echo
  echo "API: http://localhost/etl_runs   (docs: http://localhost/docs)"
  echo "token: kubectl -n $NS get secret etl-secrets -o jsonpath='{.data.api-token}' | base64 -d"
}

# Keys made here, kept in .run/kind (git-ignored), handed to the cluster as Secrets only.
secrets() {
  # The SFTP Service's name, as etl.fullname makes it: the release name alone when it contains "etl".
  local host="$RELEASE-etl-sftp"
  case "$RELEASE" in *etl*) host="$RELEASE-sftp" ;; esac
  mkdir -p "$KEYS"
  scripts/gen-keys.sh "$KEYS" "$host" 22 >/dev/null
  # The chart mounts only the ed25519 host key; pin that one.
  grep ' ssh-ed25519 ' "$KEYS/known_hosts" > "$KEYS/known_hosts.ed25519"
  [ -f "$KEYS/age_identity.txt" ] || "$PY" -m saver keygen -o "$KEYS/age_identity.txt" > "$KEYS/age_recipients.txt"
  [ -f "$KEYS/api_token" ] || "$PY" -c 'import secrets; print(secrets.token_urlsafe(32), end="")' > "$KEYS/api_token"
  [ -f "$KEYS/redis_password" ] || "$PY" -c 'import secrets; print(secrets.token_hex(24), end="")' > "$KEYS/redis_password"
  kubectl -n "$NS" create secret generic etl-secrets \
    --from-file=api-token="$KEYS/api_token" \
    --from-file=redis-password="$KEYS/redis_password" \
    --from-file=sftp-key="$KEYS/id_ed25519" \
    --from-file=known_hosts="$KEYS/known_hosts.ed25519" \
    --from-file=encryption-recipients="$KEYS/age_recipients.txt" \
    --dry-run=client -o yaml | kubectl apply -f -
  kubectl -n "$NS" create secret generic etl-sftp-server \
    --from-file=authorized_keys="$KEYS/id_ed25519.pub" \
    --from-file=ssh_host_ed25519_key="$KEYS/ssh_host_ed25519_key" \
    --dry-run=client -o yaml | kubectl apply -f -
  echo "keys in $KEYS (decrypt files with: $PY -m saver decrypt -i $KEYS/age_identity.txt FILE.age OUT)"
}

down() {
  need kind
  kind delete cluster --name "$CLUSTER"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
