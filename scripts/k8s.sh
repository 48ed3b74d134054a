#!/usr/bin/env bash
# A local Kubernetes control plane to install the Helm chart on: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler built from their Go modules, and kwok faking the nodes
# and the pods scheduled onto them. No kubelet runs and no container starts: what this proves and
# what it cannot is in docs/deploy.md.
#
#   scripts/k8s.sh build    build the binaries once and cache them under ~/.cache/parley/k8s
#   scripts/k8s.sh up       start the control plane (building first if needed) and create the nodes
#   scripts/k8s.sh down     stop everything and remove the cluster's folder
#   scripts/k8s.sh status   say what runs
#   scripts/k8s.sh env      print the KUBECONFIG export for this cluster
#
# Nodes: cpu-0 and cpu-1 (16 CPUs, 64 GiB); gpu-h100-0 and gpu-h100-1 (8 × nvidia.com/gpu,
# nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3); gpu-a100-0 (8 × nvidia.com/gpu, NVIDIA-A100-SXM4-80GB).
# GPU nodes carry nvidia.com/gpu.present=true and the taint nvidia.com/gpu=present:NoSchedule, as the
# NVIDIA GPU operator sets them. The cluster also has the nvidia RuntimeClass, hostPath volumes for
# claims to bind to, and the CRDs of KEDA and of the Prometheus Operator.
#
# Settings (environment):
#   PARLEY_RUN_DIR          where the cluster's folder lives (default <repo>/.run; folder k8s/)
#   PARLEY_CACHE_DIR        where the binaries are cached (default ~/.cache/parley)
#   K8S_API_PORT            kube-apiserver's port on 127.0.0.1 (default 16443)
#   K8S_ETCD_PORT           etcd's client port (default 12379; the peer port is one above)
#   KUBERNETES_VERSION (v1.37.2), ETCD_VERSION (v3.7.3), KWOK_VERSION (v0.8.0), KEDA_VERSION (v2.21.0),
#   PROMETHEUS_OPERATOR_VERSION (v0.85.0)
#
# `up` twice is harmless; `down` leaves nothing running.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
run="${PARLEY_RUN_DIR:-$root/.run}/k8s"
cache="${PARLEY_CACHE_DIR:-$HOME/.cache/parley}/k8s"
api_port="${K8S_API_PORT:-16443}"
etcd_port="${K8S_ETCD_PORT:-12379}"
k8s_version="${KUBERNETES_VERSION:-v1.37.2}"
etcd_version="${ETCD_VERSION:-v3.7.3}"
kwok_version="${KWOK_VERSION:-v0.8.0}"
keda_version="${KEDA_VERSION:-v2.21.0}"
promop_version="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
bin="$cache/bin"
kubeconfig="$run/kubeconfig"
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

say() { printf 'k8s: %s\n' "$*"; }
die() { printf 'k8s: error: %s\n' "$*" >&2; exit 1; }

module_dir() {  # the folder of a downloaded Go module
  go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

# -- build ------------------------------------------------------------------------------------------

build_kubernetes() {
  local marker="$bin/.kubernetes-$k8s_version"
  [[ -f "$marker" && -x "$bin/kube-apiserver" && -x "$bin/kubectl" ]] && return 0
  # k8s.io/kubernetes replaces its staging modules (k8s.io/api, client-go, …) with folders that its
  # module zip does not hold. A wrapper module requires it and replaces each with the version
  # published for this release (v1.X.Y → v0.X.Y) instead: replace lines bind only the main module.
  local src work staging
  src="$(module_dir "k8s.io/kubernetes@$k8s_version")"
  [[ -d "$src" ]] || die "could not download k8s.io/kubernetes@$k8s_version from the Go module proxy"
  staging="v0.${k8s_version#v1.}"
  work="$cache/build/kubernetes-$k8s_version"
  mkdir -p "$work" "$bin"
  {
    printf 'module parley.local/k8s-build\n\ngo %s\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' \
      "$(sed -n 's/^go //p' "$src/go.mod")" "$k8s_version"
    sed -n '/^replace (/,/^)/p' "$src/go.mod" | awk '/=>/ {print "\t" $1 " => " $1 " '"$staging"'"}'
    printf ')\n'
  } >"$work/go.mod"
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    say "building $cmd $k8s_version (the first build of Kubernetes takes a while)"
    (cd "$work" && GOFLAGS=-mod=mod go build -o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
  touch "$marker"
}

build_etcd() {
  local marker="$bin/.etcd-$etcd_version" work
  [[ -f "$marker" && -x "$bin/etcd" ]] && return 0
  # etcd's server module replaces its sibling modules with folders too: the same wrapper trick (its
  # requirements already name the published sibling versions).
  work="$cache/build/etcd-$etcd_version"
  mkdir -p "$work" "$bin"
  printf 'module parley.local/etcd-build\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "$etcd_version" >"$work/go.mod"
  say "building etcd $etcd_version"
  (cd "$work" && GOFLAGS=-mod=mod go build -o "$bin/etcd" go.etcd.io/etcd/server/v3)
  touch "$marker"
}

build_kwok() {
  local marker="$bin/.kwok-$kwok_version" src
  [[ -f "$marker" && -x "$bin/kwok" && -f "$cache/kwok-stages.yaml" ]] && return 0
  say "building kwok $kwok_version"
  GOBIN="$bin" go install "sigs.k8s.io/kwok/cmd/kwok@$kwok_version"
  # The kwok binary has no stages of its own: nodes become Ready and keep a heartbeat, pods become
  # Ready, and deleted pods go away, by kwok's own stage files.
  src="$(module_dir "sigs.k8s.io/kwok@$kwok_version")"
  {
    for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      printf -- '---\n'
      cat "$src/kustomize/stage/$f"
    done
  } >"$cache/kwok-stages.yaml"
  touch "$marker"
}

fetch_crds() {
  local marker="$cache/crds/.keda-$keda_version-promop-$promop_version" keda promop
  [[ -f "$marker" ]] && return 0
  rm -rf "$cache/crds" && mkdir -p "$cache/crds"
  keda="$(module_dir "github.com/kedacore/keda/v2@$keda_version")"
  promop="$(module_dir "github.com/prometheus-operator/prometheus-operator@$promop_version")"
  [[ -d "$keda" && -d "$promop" ]] || die "could not download the KEDA or Prometheus Operator module"
  cp "$keda"/config/crd/bases/keda.sh_*.yaml "$cache/crds/"
  cp "$promop"/example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,prometheusrules,podmonitors}.yaml \
    "$cache/crds/"
  chmod u+w "$cache"/crds/*.yaml
  touch "$marker"
}

cmd_build() {
  command -v go >/dev/null 2>&1 || die "Go is required (https://go.dev/doc/install, or: apt-get install golang)"
  local started=$SECONDS
  build_etcd
  build_kubernetes
  build_kwok
  fetch_crds
  say "binaries ready in $bin ($((SECONDS - started)) s)"
}

# -- run --------------------------------------------------------------------------------------------

kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

pid_of() {  # the pid of a component this script started, if it still runs (never another process's)
  local f="$run/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
    && [[ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" == "$(readlink -f "$bin/$1")" ]] && echo "$pid"
}

all_running() {
  local name
  for name in "${components[@]}"; do pid_of "$name" >/dev/null || return 1; done
}

start() {  # start NAME ARGS...: in the background, logging to $run/logs/NAME.log
  local name="$1"
  shift
  "$bin/$name" "$@" >"$run/logs/$name.log" 2>&1 &
  echo $! >"$run/$name.pid"
}

wait_for() {  # wait_for WHAT SECONDS COMMAND...
  local what="$1" limit="$2" deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what did not come up in ${limit} s; see $run/logs/"
    sleep 1
  done
}

api_ready() { curl -skf -H "Authorization: Bearer $(cat "$run/token")" "https://127.0.0.1:$api_port/readyz"; }

write_credentials() {
  mkdir -p "$run/pki" "$run/logs" "$run/etcd" "$run/volumes"
  openssl genrsa -out "$run/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$run/pki/sa.key" -pubout -out "$run/pki/sa.pub" 2>/dev/null
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$run/token"
  # One administrator in system:masters; the controller manager and the scheduler use it too.
  printf '%s,parley-admin,parley-admin,"system:masters"\n' "$(cat "$run/token")" >"$run/pki/tokens.csv"
  cat >"$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: parley-local
    cluster: {server: "https://127.0.0.1:$api_port", insecure-skip-tls-verify: true}
users:
  - name: parley-admin
    user: {token: "$(cat "$run/token")"}
contexts:
  - name: parley-local
    context: {cluster: parley-local, user: parley-admin}
current-context: parley-local
EOF
}

create_nodes() {
  local nodes=""
  node() {  # node NAME CPUS GPUS PRODUCT
    local labels="{type: kwok, kubernetes.io/hostname: $1, kubernetes.io/os: linux, kubernetes.io/arch: amd64}"
    local taints="[]" capacity="{cpu: \"$2\", memory: 64Gi, pods: \"110\", ephemeral-storage: 200Gi}"
    if [[ "$3" != 0 ]]; then
      labels="{type: kwok, kubernetes.io/hostname: $1, kubernetes.io/os: linux, kubernetes.io/arch: amd64, nvidia.com/gpu.present: \"true\", nvidia.com/gpu.product: $4, nvidia.com/gpu.count: \"$3\"}"
      taints="[{key: nvidia.com/gpu, value: present, effect: NoSchedule}]"
      capacity="{cpu: \"$2\", memory: 256Gi, pods: \"110\", ephemeral-storage: 500Gi, nvidia.com/gpu: \"$3\"}"
    fi
    nodes+="---
apiVersion: v1
kind: Node
metadata:
  name: $1
  labels: $labels
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: \"0\"}
spec:
  taints: $taints
status:
  capacity: $capacity
  allocatable: $capacity
"
  }
  node cpu-0 16 0 ""
  node cpu-1 16 0 ""
  node gpu-h100-0 32 8 NVIDIA-H100-80GB-HBM3
  node gpu-h100-1 32 8 NVIDIA-H100-80GB-HBM3
  node gpu-a100-0 32 8 NVIDIA-A100-SXM4-80GB
  printf '%s' "$nodes" | kubectl apply -f - >/dev/null
}

create_cluster_objects() {
  kubectl apply -f - >/dev/null <<EOF
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: nvidia}
handler: nvidia
EOF
  # hostPath volumes for claims to bind to (no provisioner runs here; scripts/helm-install.sh makes
  # released ones available again).
  local k
  for k in 0 1 2 3 4 5 6 7; do
    kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: local-$k, labels: {type: kwok}}
spec:
  capacity: {storage: 100Gi}
  accessModes: [ReadWriteOnce, ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: "$run/volumes/local-$k"}
EOF
  done
  kubectl apply --server-side -f "$cache/crds" >/dev/null
  kubectl wait --for condition=Established --timeout 60s -f "$cache/crds" >/dev/null
}

cmd_up() {
  if all_running && api_ready >/dev/null 2>&1; then
    say "already up: export KUBECONFIG=$kubeconfig"
    return 0
  fi
  [[ -d "$run" ]] && cmd_down >/dev/null  # a part is missing: start over
  cmd_build
  "$(command -v python3)" "$here/probe.py" port-free 127.0.0.1 "$api_port" \
    || die "port $api_port is taken; choose another: K8S_API_PORT=26443 $0 up"
  "$(command -v python3)" "$here/probe.py" port-free 127.0.0.1 "$etcd_port" \
    || die "port $etcd_port is taken; choose another: K8S_ETCD_PORT=22379 $0 up"
  local started=$SECONDS
  trap 'status=$?; if ((status != 0)); then say "start-up failed; stopping what started"; cmd_down >/dev/null; fi' EXIT
  write_credentials
  start etcd --name parley --data-dir "$run/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-cluster "parley=http://127.0.0.1:$((etcd_port + 1))" \
    --listen-metrics-urls "" --unsafe-no-fsync --quota-backend-bytes 1073741824
  wait_for etcd 60 curl -sf "http://127.0.0.1:$etcd_port/health"
  start kube-apiserver --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --secure-port "$api_port" --advertise-address 127.0.0.1 \
    --cert-dir "$run/pki" --token-auth-file "$run/pki/tokens.csv" --authorization-mode RBAC \
    --service-account-key-file "$run/pki/sa.pub" --service-account-signing-key-file "$run/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none --allow-privileged
  wait_for kube-apiserver 120 api_ready
  start kube-controller-manager --kubeconfig "$kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port 0 --use-service-account-credentials=false \
    --service-account-private-key-file "$run/pki/sa.key" --root-ca-file "$run/pki/apiserver.crt" \
    --cluster-signing-cert-file "" --controllers '*,-nodeipam,-csrsigning,-bootstrapsigner,-tokencleaner'
  start kube-scheduler --kubeconfig "$kubeconfig" --leader-elect=false --bind-address 127.0.0.1 --secure-port 0
  start kwok --kubeconfig "$kubeconfig" --config "$cache/kwok-stages.yaml" \
    --manage-nodes-with-label-selector type=kwok --cidr 10.244.0.0/16 --node-ip 10.0.0.1
  create_nodes
  wait_for "Ready nodes" 90 kubectl wait --for condition=Ready node --all --timeout 5s
  create_cluster_objects
  wait_for "the default service account" 60 kubectl get serviceaccount default -n default
  trap - EXIT
  say "up in $((SECONDS - started)) s: export KUBECONFIG=$kubeconfig"
}

cmd_down() {
  local name pid i
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    name="${components[$i]}"
    if pid="$(pid_of "$name")"; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$run"
  say "down"
}

cmd_status() {
  local name pid
  for name in "${components[@]}"; do
    if pid="$(pid_of "$name")"; then say "$name: running (pid $pid)"; else say "$name: not running"; fi
  done
  if api_ready >/dev/null 2>&1; then say "API server ready: export KUBECONFIG=$kubeconfig"; fi
}

case "${1:-}" in
  build) cmd_build ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) echo "export KUBECONFIG=$kubeconfig" ;;
  *) die "usage: $0 build|up|down|status|env" ;;
esac
