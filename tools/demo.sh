#!/usr/bin/env bash
# Quick start, command 1: install what is needed, build, and run the demo on an embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh build
exec node packages/cli/dist/bin.js demo "$@"
