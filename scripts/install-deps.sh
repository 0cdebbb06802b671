#!/usr/bin/env bash
# Installs everything Kommerce needs on a fresh machine, each step timed:
# Debian packages (PostgreSQL with contrib, Java for Kafka, Go and Maven for the test bed's
# builds) when missing, then a virtualenv with the project and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"

timed() {
  local what=$1; shift
  local start; start=$(date +%s)
  "$@"
  echo "[setup] ${what}: $(( $(date +%s) - start ))s"
}

debian_packages() {
  local missing=()
  compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql postgresql-contrib)
  command -v java >/dev/null || missing+=(default-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  command -v go >/dev/null || missing+=(golang-go)
  command -v setpriv >/dev/null || missing+=(util-linux)
  if ((${#missing[@]})); then
    local sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
}

python_env() {
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  # Re-install only when pyproject.toml changed since the last install.
  local stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  if [[ ! -f "$stamp" ]]; then
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e '.[test]'
    rm -f "$VENV"/.installed-*; touch "$stamp"
  fi
}

timed "debian packages" debian_packages
timed "python environment" python_env
