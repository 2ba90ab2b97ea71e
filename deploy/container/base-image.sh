#!/usr/bin/env bash
# A Python 3.11 base image made here from Debian's packages, for machines that reach no image registry:
# debootstrap (minbase) into a temporary folder, then `docker import`. Does nothing if the image exists.
set -euo pipefail
image=${1:-tiffin-base:bookworm}
docker image inspect "$image" >/dev/null 2>&1 && exit 0
sudo=$([ "$(id -u)" = 0 ] || echo sudo)
command -v debootstrap >/dev/null || $sudo apt-get install -y -qq debootstrap \
  || { $sudo apt-get update -qq && $sudo apt-get install -y -qq debootstrap; }
root=$(mktemp -d)
trap '$sudo rm -rf "$root"' EXIT
echo "base image $image: debootstrap bookworm (about a minute)"
$sudo debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" \
  http://deb.debian.org/debian >"$root.log" 2>&1 || { tail -20 "$root.log"; exit 1; }
$sudo rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
$sudo tar -C "$root" -c . | docker import --change 'CMD ["python3"]' - "$image" >/dev/null
rm -f "$root.log"
echo "base image $image: $(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=iec)"
