#!/usr/bin/env bash
# The CLI bench with its baselines: installs GNU parallel (Debian package `parallel`) if it
# is missing, then runs `cargo bench -p workcrew-cli --bench cli`.
set -euo pipefail
cd "$(dirname "$0")/../../.."
if ! command -v parallel >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
        $sudo apt-get install -y parallel || { $sudo apt-get update && $sudo apt-get install -y parallel; }
    else
        echo "warning: GNU parallel is missing and apt-get is not here; its figure is skipped" >&2
    fi
fi
exec cargo bench -p workcrew-cli --bench cli "$@"
