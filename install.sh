#!/usr/bin/env bash
# Installs everything hwkd needs on Debian bookworm (or a derivative):
#   - the Debian packages the embedded corpus is synthesised from (speech, TTS, CC0 ambient noise);
#   - the OpenSSH client (measuring on devices over SSH) and server (the SSH tests start their own sshd on
#     loopback; set HWKD_NO_SSHD=1 to skip it — on a systemd machine the package also enables an ssh service);
#   - the PostgreSQL server (the test of many search workers sharing one study starts its own server on
#     loopback; set HWKD_NO_POSTGRES=1 to skip it — Debian's package also creates a default cluster);
#   - a Python 3.11 virtual environment in .venv with hwkd and its test tools.
# Safe to rerun: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"

DEB_PACKAGES="asterisk-core-sounds-en-g722 asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722
asterisk-core-sounds-ru-g722 espeak-ng espeak-ng-data flite sonic-pi-samples openssh-client"
[ "${HWKD_NO_SSHD:-0}" = 1 ] || DEB_PACKAGES="$DEB_PACKAGES openssh-server"
[ "${HWKD_NO_POSTGRES:-0}" = 1 ] || DEB_PACKAGES="$DEB_PACKAGES postgresql"
PYTHON="${PYTHON:-python3}"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=""
for p in $DEB_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then missing="$missing python3-venv"; fi
if [ -n "$missing" ]; then
  echo "install.sh: installing Debian packages:$missing"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "install.sh: hwkd needs Python 3.11 (found $("$PYTHON" --version 2>&1)); set PYTHON=python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# torch is pinned (pyproject) to the CPU wheel; pip's output is filtered of index warnings only
.venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import hwkd, torch, pesq, pystoi, pyroomacoustics, speechmos, optuna, nni, psycopg" \
  || { echo "install.sh: the Python install did not complete (see pip's messages above)" >&2; exit 1; }
echo "install.sh: ready (.venv/bin/hwkd)"
