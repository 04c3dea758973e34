#!/usr/bin/env bash
# Quick start, command 2: install what is needed (apt packages, npm ci, cargo builds) and run
# the whole suite: linters (biome, cargo fmt, clippy), cargo tests, and the vitest projects,
# including the integration tests against real dockerd, registry, kernel overlay and Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh test
# CI runs as root: the kernel-overlay tests must run, not skip.
export STEVEDORE_REQUIRE_KERNEL_OVERLAY=${STEVEDORE_REQUIRE_KERNEL_OVERLAY:-1}
export STEVEDORE_REQUIRE_DOCKER=${STEVEDORE_REQUIRE_DOCKER:-1}
rm -rf build/test-results
status=0
npx nx run-many -t lint --outputStyle=static || status=1
npx nx run-many -t test --parallel=1 --outputStyle=static --skip-nx-cache || status=1
node tools/test-summary.mjs || status=1
exit $status
