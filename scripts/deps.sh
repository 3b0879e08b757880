#!/bin/sh
# deps.sh [--build] — install what litevisor needs to build, test and demo, idempotently.
#
# On Debian 12 as root: apt-installs only the packages that are missing, then
# installs the pinned npm test peers in tests/ (npm ci, from package-lock.json)
# when node_modules is missing or older than the lockfile. Safe to run often:
# with everything present it does no network access at all. --build: only
# what building and the demo need (no test runner, no npm packages).
set -eu
cd "$(dirname "$0")/.."

PKGS="build-essential pkg-config libsqlite3-dev libcurl4-openssl-dev libjansson-dev libyaml-dev \
libmicrohttpd-dev liblz4-dev libssl-dev sqlite3 curl python3"
build_only=false
if [ "${1:-}" = --build ]; then
	build_only=true
else
	# prometheus: its promtool checks jobs/litevisor.rules.yml (tests/test_alerts.py)
	PKGS="$PKGS lz4 age python3-pytest python3-pytest-xdist python3-botocore python3-yaml nodejs gnuplot-nox procps iproute2 prometheus"
fi

missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# npm: Debian's package, unless an npm is already on PATH (e.g. a newer one shipped with node)
$build_only || command -v npm >/dev/null 2>&1 || missing="$missing npm"

if [ -n "$missing" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps.sh: missing packages:$missing — run as root or install them" >&2
		exit 1
	fi
	echo "deps.sh: installing$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

$build_only && exit 0
if [ ! -f tests/node_modules/.package-lock.json ] ||
   [ tests/package-lock.json -nt tests/node_modules/.package-lock.json ]; then
	echo "deps.sh: installing pinned test peers (npm ci in tests/)" >&2
	(cd tests && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
