#!/usr/bin/env bash
# Check the Helm chart: install Helm, helm-unittest and kube-score from the Go module proxy when
# missing, then `helm lint --strict` and `helm template` for the defaults and every ci/*-values.yaml
# scenario, kube-score on each rendering (fails on any CRITICAL finding; warnings are printed), and
# the helm-unittest suites in helm/parley/tests.
#
# Settings (environment): HELM_VERSION (default v3.22.0), HELM_UNITTEST_VERSION (default v1.1.2),
# KUBE_SCORE_VERSION (default v1.20.0), KUBERNETES_VERSION (the cluster version kube-score judges
# API versions against; default v1.30), GOBIN (where the tools go; default $(go env GOPATH)/bin).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chart="$(dirname "$here")/helm/parley"
helm_version="${HELM_VERSION:-v3.22.0}"
unittest_version="${HELM_UNITTEST_VERSION:-v1.1.2}"
kube_score_version="${KUBE_SCORE_VERSION:-v1.20.0}"
kubernetes_version="${KUBERNETES_VERSION:-v1.30}"

say() { printf 'helm-check: %s\n' "$*"; }
die() { printf 'helm-check: error: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "Go is required to build Helm (https://go.dev/doc/install, or: apt-get install golang)"
bin="${GOBIN:-$(go env GOPATH)/bin}"
mkdir -p "$bin"
helm="$bin/helm"
unittest="$bin/helm-unittest"
kube_score="$bin/kube-score"

# `go install` does not stamp Helm's version into the binary (it reports "v3.22"), so a marker file
# records which version was built.
if [[ ! -x "$helm" || ! -f "$bin/.helm-${helm_version}" ]]; then
  say "building Helm $helm_version with go install (a few minutes the first time)"
  GOBIN="$bin" go install "helm.sh/helm/v3/cmd/helm@${helm_version}"
  touch "$bin/.helm-${helm_version}"
fi
if [[ ! -x "$unittest" || ! -f "$bin/.helm-unittest-${unittest_version}" ]]; then
  # helm-unittest's go.mod has replace directives, which `go install pkg@version` refuses: build it
  # from its module directory instead.
  say "building helm-unittest $unittest_version"
  dir="$(go mod download -json "github.com/helm-unittest/helm-unittest@${unittest_version}" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -d "$dir" ]] || die "could not download github.com/helm-unittest/helm-unittest@${unittest_version}"
  (cd "$dir" && go build -o "$unittest" ./cmd/helm-unittest)
  touch "$bin/.helm-unittest-${unittest_version}"
fi
# Like Helm, kube-score built by `go install` reports "development" as its version: a marker again.
if [[ ! -x "$kube_score" || ! -f "$bin/.kube-score-${kube_score_version}" ]]; then
  say "building kube-score $kube_score_version with go install (about a minute the first time)"
  GOBIN="$bin" go install "github.com/zegl/kube-score/cmd/kube-score@${kube_score_version}"
  touch "$bin/.kube-score-${kube_score_version}"
fi

# kube-score's findings that are wrong for parley, each switched off for a reason:
kube_score_flags=(
  --kubernetes-version "$kubernetes_version"
  # No CPU limit by default: CFS throttling adds tail latency to a worker whose request already
  # reserves its cores (values can still set one, as ci/cpu-only-values.yaml does).
  --ignore-container-cpu-limit
  # The tag is a release (the chart's appVersion unless set), not a moving one like latest, and the
  # GPU image is large: IfNotPresent by default; clusters that want pull secrets checked on every
  # start set image.pullPolicy=Always.
  --ignore-test container-image-pull-policy
)

# kube-score reads the rendered manifests on stdin; it exits 1 on a CRITICAL finding.
score() {
  local report status=0
  report="$("$kube_score" score "${kube_score_flags[@]}" --output-format ci - 2>&1)" || status=$?
  grep -E '^\[(CRITICAL|WARNING)\]' <<<"$report" || true
  if [[ $status -ne 0 ]] || grep -q '^\[CRITICAL\]' <<<"$report"; then
    grep -Ev '^\[(OK|SKIPPED|WARNING|CRITICAL)\]' <<<"$report" >&2 || true
    die "kube-score found CRITICAL problems in the rendering with $1"
  fi
}

say "helm lint --strict and kube-score (defaults)"
"$helm" lint --strict "$chart"
"$helm" template parley "$chart" | score "the defaults"
for values in "$chart"/ci/*-values.yaml; do
  name="$(basename "$values")"
  say "helm lint --strict, helm template and kube-score with ci/$name"
  "$helm" lint --strict "$chart" -f "$values" >/dev/null
  "$helm" template parley "$chart" -f "$values" | score "ci/$name"
done
say "helm-unittest"
"$unittest" --strict "$chart"
