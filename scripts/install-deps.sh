#!/usr/bin/env bash
# Installs everything Kommerce needs on a fresh machine, each step timed:
# Debian packages (PostgreSQL with contrib, Java for Kafka, Go and Maven for the test bed's
# builds; containerd, runc, the CNI plugins, iptables, conntrack, buildah and mmdebstrap for
# its real node) when missing, then a virtualenv with the project and its test tools, at
# the versions requirements.lock pins.
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
  # The real node (kommerce/testbed/node.py): a container runtime, its network and the image
  # builder. Without root they are of no use, so a user's machine is left alone.
  if [[ $(id -u) == 0 ]]; then
    command -v containerd >/dev/null || missing+=(containerd)
    command -v runc >/dev/null || missing+=(runc)
    [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
    command -v iptables >/dev/null || missing+=(iptables)
    command -v conntrack >/dev/null || missing+=(conntrack)
    command -v buildah >/dev/null || missing+=(buildah)
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  fi
  if ((${#missing[@]})); then
    local sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
}

python_env() {
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  # Re-install only when pyproject.toml or requirements.lock changed since the last install.
  local stamp="$VENV/.installed-$(cat pyproject.toml requirements.lock 2>/dev/null \
    | sha256sum | cut -c1-16)"
  if [[ ! -f "$stamp" ]]; then
    # The versions pinned in requirements.lock (`make lock`) when it is there, so every
    # machine installs the same set; without it, the newest that pyproject.toml allows.
    local lock=()
    [[ -f requirements.lock ]] && lock=(-r requirements.lock)
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "${lock[@]}" -e '.[test]' || {
      echo "[setup] pip install failed; if pyproject.toml changed, \`make lock\` re-resolves" \
        "requirements.lock" >&2
      return 1
    }
    rm -f "$VENV"/.installed-*; touch "$stamp"
  fi
}

timed "debian packages" debian_packages
timed "python environment" python_env
