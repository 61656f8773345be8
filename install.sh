#!/usr/bin/env bash
# Installs everything hwkd needs on Debian bookworm (or a derivative):
#   - the Debian packages the embedded corpus is synthesised from (speech, TTS, CC0 ambient noise);
#   - the OpenSSH client (measuring on devices over SSH);
#   - the binaries of the two servers some tests start themselves, on loopback, for the length of the test
#     run: OpenSSH's sshd and PostgreSQL. Installed so that no service runs, now or after a reboot: the
#     packages' start is refused while they install (policy-rc.d), sshd gets Debian's own off switch
#     (/etc/ssh/sshd_not_to_be_run, which ssh.service, ssh.socket and the init script honour), PostgreSQL
#     creates no default cluster (create_main_cluster = off), and the units are disabled. This applies to
#     packages this script installs; a server that was already installed is left as it is.
#     HWKD_TEST_SERVERS=0 skips both (their tests then skip), HWKD_NO_SSHD=1 / HWKD_NO_POSTGRES=1 one.
#   - Chromium and its WebDriver (chromium-driver), with which a test opens the HTML reports headless and offline;
#     HWKD_NO_BROWSER=1 skips them (that test then skips).
#   - a Python 3.11 virtual environment in .venv with hwkd and its test tools.
# Safe to rerun: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")"

DEB_PACKAGES="asterisk-core-sounds-en-g722 asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722
asterisk-core-sounds-ru-g722 espeak-ng espeak-ng-data flite sonic-pi-samples openssh-client
festival festvox-kdlpc16k festvox-italp16k festvox-czech-dita"
TEST_SERVERS=""
if [ "${HWKD_TEST_SERVERS:-1}" != 0 ]; then
  [ "${HWKD_NO_SSHD:-0}" = 1 ] || TEST_SERVERS="$TEST_SERVERS openssh-server"
  [ "${HWKD_NO_POSTGRES:-0}" = 1 ] || TEST_SERVERS="$TEST_SERVERS postgresql"
fi
[ "${HWKD_NO_BROWSER:-0}" = 1 ] || DEB_PACKAGES="$DEB_PACKAGES chromium chromium-driver"
PYTHON="${PYTHON:-python3}"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
apt_install() { DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends "$@" >/dev/null; }

missing=""
for p in $DEB_PACKAGES; do installed "$p" || missing="$missing $p"; done
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then missing="$missing python3-venv"; fi
servers=""
for p in $TEST_SERVERS; do installed "$p" || servers="$servers $p"; done
updated=0
if [ -n "$missing" ]; then
  echo "install.sh: installing Debian packages:$missing"
  as_root apt-get update -qq && updated=1
  apt_install $missing
fi

# The test servers: binaries only. While they install, /usr/sbin/policy-rc.d answers 101 ("action
# forbidden"), which invoke-rc.d and deb-systemd-invoke obey, so the packages start nothing; a policy-rc.d
# that was there already (a container's) is put back afterwards.
if [ -n "$servers" ]; then
  echo "install.sh: installing the test servers' binaries, with no service started or enabled:$servers"
  [ "$updated" = 1 ] || as_root apt-get update -qq
  policy=/usr/sbin/policy-rc.d
  saved=""
  if [ -e "$policy" ]; then saved="$(mktemp)"; as_root cp -p "$policy" "$saved"; fi
  restore_policy() {
    if [ -n "$saved" ]; then as_root cp -p "$saved" "$policy"; as_root rm -f "$saved"; else as_root rm -f "$policy"; fi
  }
  trap restore_policy EXIT
  printf '#!/bin/sh\n# install.sh (hwkd): no service starts while the test servers install\nexit 101\n' \
    | as_root tee "$policy" >/dev/null
  as_root chmod 755 "$policy"
  units=""
  case " $servers " in *" openssh-server "*)
    as_root mkdir -p /etc/ssh
    as_root touch /etc/ssh/sshd_not_to_be_run              # Debian's switch: sshd is not to be run as a service
    apt_install openssh-server
    units="$units ssh.service ssh.socket"
    [ -x /usr/sbin/update-rc.d ] && as_root update-rc.d ssh disable >/dev/null 2>&1 || true
  esac
  case " $servers " in *" postgresql "*)
    # postgresql-common first: its createcluster.conf decides whether the server package creates (and
    # enables) a default cluster listening on port 5432
    installed postgresql-common || apt_install postgresql-common
    conf=/etc/postgresql-common/createcluster.conf
    if as_root grep -qE '^[#[:space:]]*create_main_cluster' "$conf"; then
      as_root sed -i -E 's/^[#[:space:]]*create_main_cluster.*/create_main_cluster = off/' "$conf"
    else
      echo "create_main_cluster = off" | as_root tee -a "$conf" >/dev/null
    fi
    apt_install postgresql
    units="$units postgresql.service"
    [ -x /usr/sbin/update-rc.d ] && as_root update-rc.d postgresql disable >/dev/null 2>&1 || true
  esac
  if command -v systemctl >/dev/null; then
    for u in $units; do as_root systemctl disable --quiet "$u" 2>/dev/null || true; done   # works offline too
  fi
  restore_policy
  trap - EXIT
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
