#!/usr/bin/env bash
# Starts this example's backends and a gateway serving it (see README.md).
exec "$(dirname "$0")/../run-example.sh" "$(dirname "$0")" "$@"
