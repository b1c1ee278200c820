#!/usr/bin/env bash
# Install the peer systems for the roomsync benchmarks, outside the repo's sources:
#   bench/peers/.env/          Python venv: pycrdt-websocket (+ uvicorn) and pycrdt
#   bench/peers/node_modules/  npm: @y/websocket-server, @hocuspocus/server (pinned by
#                              package.json + package-lock.json)
# and pycrdt into the main interpreter (the load generator builds Yjs updates with it).
# Both directories are gitignored: peer code is installed, never vendored.
#
# Usage: bench/peers/install.sh            (idempotent; PYTHON=... to pick the interpreter)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
export PIP_ROOT_USER_ACTION=ignore

echo "== main interpreter ($("$PYTHON" --version)): load-generator deps"
"$PYTHON" -m pip install --quiet --disable-pip-version-check -r "$here/requirements-bench.txt"

echo "== Python venv for pycrdt-websocket: $here/.env"
if [ ! -x "$here/.env/bin/python" ]; then
    "$PYTHON" -m venv "$here/.env"
fi
"$here/.env/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$here/requirements-env.txt"

echo "== npm peers (node $(node --version)): $here/node_modules"
# --ignore-scripts: the only install script in the tree is leveldown's (optional
# persistence of @y/websocket-server, unused here; it ships prebuilt binaries anyway).
(cd "$here" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

echo "== installed"
# Versions of what the runs use. The main interpreter also needs roomsync itself (and
# with it aiohttp): `pip install -e .` from the repo root; say so rather than fail here.
version_of='
import importlib.metadata as m, sys
where, names = sys.argv[1], sys.argv[2:]
for name in names:
    try:
        print(f"  {where:5} {name}=={m.version(name)}")
    except m.PackageNotFoundError:
        print(f"  {where:5} {name}: NOT INSTALLED (main: pip install -e . from the repo root)")
'
"$here/.env/bin/python" -c "$version_of" venv pycrdt-websocket pycrdt uvicorn websockets uvloop
"$PYTHON" -c "$version_of" main pycrdt aiohttp roomsync
(cd "$here" && node -e '
for (const p of ["@y/websocket-server", "@hocuspocus/server", "yjs", "y-protocols"]) {
  console.log(`  npm   ${p}@${require(`./node_modules/${p}/package.json`).version}`)
}')
