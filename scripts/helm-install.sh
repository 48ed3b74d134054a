#!/usr/bin/env bash
# Install the chart for real on the local control plane (scripts/k8s.sh: a real API server,
# scheduler and controllers, kwok's fake CPU and GPU nodes), once with the defaults and once per
# helm/parley/ci/*-values.yaml scenario, and check what a user would:
#
#   1. `helm install --wait` succeeds: the API server accepts every rendered object, KEDA's
#      ScaledObject and the Prometheus Operator's objects against their real CRD schemas;
#   2. every rendered object exists; every pod is scheduled, GPU workers on GPU nodes only, CPU workers
#      on CPU nodes only, each GPU kind's watcher on that kind's nodes (scripts/helm_install_check.py);
#   3. `helm upgrade` with a changed value rolls the workers to a new pod template;
#   4. `helm uninstall` leaves nothing behind;
#   5. values a user gets wrong (GPU tolerations without the GPU taint, a bad secret name, a lag
#      threshold of 0) fail at install, with a message, and install nothing.
#
#   scripts/helm-install.sh            bring the cluster up if needed, check every scenario
#   KEEP_CLUSTER=1 scripts/helm-install.sh   leave the cluster running afterwards (default: a cluster
#                                            this run started goes down; one already up stays up)
#
# Needs Go (the binaries are built once and cached: scripts/k8s.sh build) and Helm (scripts/helm-check.sh
# builds it). Prints how long each part took.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
chart="$root/helm/parley"
cache="${PARLEY_CACHE_DIR:-$HOME/.cache/parley}/k8s"
command -v go >/dev/null 2>&1 || { echo "helm-install: error: Go is required (it builds Helm and Kubernetes)" >&2; exit 1; }
gobin="${GOBIN:-$(go env GOPATH)/bin}"
export PATH="$cache/bin:$gobin:$PATH"
release=parley

say() { printf 'helm-install: %s\n' "$*"; }
die() { printf 'helm-install: error: %s\n' "$*" >&2; exit 1; }

command -v helm >/dev/null 2>&1 || die "helm is missing: run 'make helm' first (it builds Helm)"
started=$SECONDS
work="$(mktemp -d)"
was_up=0
bash "$here/k8s.sh" status 2>/dev/null | grep -q "API server ready" && was_up=1
finish() {
  rm -rf "$work"
  # a cluster this run started goes down again, unless asked to keep it; one that was up stays up
  if [[ "$was_up" == 0 && "${KEEP_CLUSTER:-0}" != 1 ]]; then bash "$here/k8s.sh" down >/dev/null; fi
}
trap finish EXIT
bash "$here/k8s.sh" up
eval "$(bash "$here/k8s.sh" env)"
say "cluster ready after $((SECONDS - started)) s"

# What a cluster running parley already has: a priority class the GPU scenario names, and the
# monitoring namespace where Grafana's sidecar picks up dashboards (the keda scenario).
kubectl get namespace monitoring >/dev/null 2>&1 || kubectl create namespace monitoring >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high-priority}
value: 100000
EOF

prerequisites() {  # the Secrets and claims a scenario names exist in its namespace, as in a real one
  local ns="$1" values="${2:-}" s
  for s in kafka-credentials redis-auth llm-api parley-kafka kafka-ca; do
    kubectl -n "$ns" create secret generic "$s" --from-literal=username=u --from-literal=password=p \
      --from-literal=pass=p --from-literal=redis-password=p --from-literal=api-key=k --from-literal=token=t \
      --from-literal=ca.crt=c --from-literal=ca.pem=c >/dev/null
  done
  grep -q "existingClaim: parley-data" "${values:-/dev/null}" || return 0
  kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: parley-data}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  resources: {requests: {storage: 10Gi}}
EOF
}

recycle_volumes() {  # released hostPath volumes become available again, as an administrator would make them
  local pv
  for pv in $(kubectl get pv -o jsonpath='{range .items[?(@.status.phase=="Released")]}{.metadata.name} {end}'); do
    kubectl patch pv "$pv" --type json -p '[{"op": "remove", "path": "/spec/claimRef"}]' >/dev/null
  done
}

scenario() {  # scenario NAME [VALUES_FILE]
  local name="$1" values=() ns="parley-$1" t0=$SECONDS
  [[ -n "${2:-}" ]] && values=(-f "$2")
  say "[$name] install"
  if kubectl get namespace "$ns" >/dev/null 2>&1; then  # left by an earlier run that failed
    helm uninstall "$release" -n "$ns" --wait >/dev/null 2>&1 || true
    kubectl delete namespace "$ns" --timeout 120s >/dev/null
    recycle_volumes
  fi
  kubectl create namespace "$ns" >/dev/null
  prerequisites "$ns" "${2:-}"
  helm install "$release" "$chart" -n "$ns" "${values[@]}" --wait --timeout 5m >/dev/null
  python3 "$here/helm_install_check.py" installed --release "$release" --namespace "$ns"
  python3 "$here/helm_install_check.py" snapshot --release "$release" --namespace "$ns" >"$work/$name.json"
  say "[$name] upgrade with a changed value"
  helm upgrade "$release" "$chart" -n "$ns" "${values[@]}" --set worker.batchMaxSize=100 --wait --timeout 5m \
    >/dev/null
  python3 "$here/helm_install_check.py" rolled --release "$release" --namespace "$ns" --before "$work/$name.json"
  helm get manifest "$release" -n "$ns" >"$work/$name.yaml"
  say "[$name] uninstall"
  helm uninstall "$release" -n "$ns" --wait >/dev/null
  python3 "$here/helm_install_check.py" gone --release "$release" --namespace "$ns" --manifest "$work/$name.yaml"
  kubectl delete namespace "$ns" --timeout 120s >/dev/null
  recycle_volumes
  say "[$name] passed in $((SECONDS - t0)) s"
}

refused() {  # refused WHAT EXPECTED_MESSAGE HELM_ARGS...: the install fails with that message, installs nothing
  local what="$1" expected="$2" ns=parley-mistakes out
  shift 2
  kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns" >/dev/null
  if out="$(helm install "$release" "$chart" -n "$ns" "$@" 2>&1)"; then
    die "$what: helm install succeeded, it should have failed"
  fi
  grep -qF -- "$expected" <<<"$out" || die "$what: helm failed, but without saying '$expected':
$out"
  [[ -z "$(helm list -n "$ns" -q)" ]] || die "$what: a release was left behind"
  say "[mistake] $what: refused ($(grep -oF -- "$expected" <<<"$out" | head -1))"
}

scenario defaults
for values in "$chart"/ci/*-values.yaml; do
  scenario "$(basename "$values" -values.yaml)" "$values"
done
refused "GPU worker tolerations without the GPU taint" \
  "worker.tolerations replaces the default GPU toleration" \
  --set 'worker.tolerations[0].key=dedicated' --set 'worker.tolerations[0].operator=Exists'
refused "a secret name Kubernetes rejects" "/redis/passwordSecret/name" --set redis.passwordSecret.name=Redis_Auth
refused "a Kafka lag threshold of 0" "/autoscaling/keda/lagThreshold" \
  --set autoscaling.keda.enabled=true --set autoscaling.keda.lagThreshold=0
say "every scenario installed, upgraded and uninstalled cleanly in $((SECONDS - started)) s"
