#!/usr/bin/env bash
# Check the Helm chart: install Helm and helm-unittest from the Go module proxy when missing, then
# `helm lint --strict` and `helm template` for the defaults and every ci/*-values.yaml scenario, and
# the helm-unittest suites in helm/parley/tests.
#
# Settings (environment): HELM_VERSION (default v3.22.0), HELM_UNITTEST_VERSION (default v1.1.2),
# GOBIN (where the tools go; default $(go env GOPATH)/bin).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chart="$(dirname "$here")/helm/parley"
helm_version="${HELM_VERSION:-v3.22.0}"
unittest_version="${HELM_UNITTEST_VERSION:-v1.1.2}"

say() { printf 'helm-check: %s\n' "$*"; }
die() { printf 'helm-check: error: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "Go is required to build Helm (https://go.dev/doc/install, or: apt-get install golang)"
bin="${GOBIN:-$(go env GOPATH)/bin}"
mkdir -p "$bin"
helm="$bin/helm"
unittest="$bin/helm-unittest"

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

say "helm lint --strict (defaults)"
"$helm" lint --strict "$chart"
for values in "$chart"/ci/*-values.yaml; do
  name="$(basename "$values")"
  say "helm lint --strict and helm template with ci/$name"
  "$helm" lint --strict "$chart" -f "$values" >/dev/null
  "$helm" template parley "$chart" -f "$values" >/dev/null
done
say "helm-unittest"
"$unittest" --strict "$chart"
