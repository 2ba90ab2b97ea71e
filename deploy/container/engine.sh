#!/usr/bin/env bash
# A Docker engine for `make container-check` and the tests: Debian's docker.io, started here if none answers.
# These machines have no bridge networking, so the daemon runs without it (containers use the host's network).
# Storage: overlay2, else vfs (which copies the whole image at every build step: several times slower).
set -euo pipefail
docker info >/dev/null 2>&1 && exit 0
sudo=$([ "$(id -u)" = 0 ] || echo sudo)
if ! command -v dockerd >/dev/null; then
  $sudo apt-get install -y -qq docker.io >/dev/null \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq docker.io >/dev/null; }
fi
log=${TMPDIR:-/tmp}/tiffin-dockerd.log
for driver in overlay2 vfs; do
  echo "starting dockerd with the $driver storage driver (log: $log)"
  $sudo nohup dockerd --storage-driver="$driver" --iptables=false --bridge=none >"$log" 2>&1 &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && exit 0
    kill -0 $! 2>/dev/null || break
    sleep 1
  done
  $sudo pkill dockerd || true
  sleep 2
done
echo "no Docker engine could start here; its log:" >&2
tail -20 "$log" >&2
exit 1
