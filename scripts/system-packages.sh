#!/usr/bin/env bash
# The Debian packages the test suite runs against. Installs the missing ones
# when root; otherwise says what to install. With CI=true a piece that is
# still missing is an error: the suite never skips a real service silently.
set -euo pipefail

declare -A need=(
  [Orthanc]=orthanc
  [dcmqrscp]=dcmtk
  [dcmqridx]=dcmtk
  [redis-server]=redis-server
  [chromium]=chromium
  [docker-compose]=docker-compose
  [dcm2niix]=dcm2niix
)
missing=()
for program in "${!need[@]}"; do
  command -v "$program" >/dev/null 2>&1 || missing+=("${need[$program]}")
done
# PostgreSQL keeps its programs out of PATH, per version.
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
if [ -d /usr/share/orthanc/plugins ] && [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
  missing+=(orthanc-dicomweb)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # policy-rc.d 101: do not start the packages' own system services (Orthanc
  # on 4242, redis on 6379, PostgreSQL on 5432); the tests start their own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}" orthanc-dicomweb
  exit 0
fi

echo "missing Debian packages: ${missing[*]}" >&2
echo "install them with: sudo apt-get install ${missing[*]}" >&2
if [ "${CI:-}" = "true" ]; then
  exit 1
fi
echo "(tests that need them will fail with the same message)" >&2
