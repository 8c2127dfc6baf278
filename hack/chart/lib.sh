# Shared by the chart-tool scripts: versions and cache locations.
# shellcheck shell=bash
CHART_TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$CHART_TOOLS_DIR/versions.env"
CACHE_ROOT=${JWKS_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jwks-operator}
# shellcheck disable=SC2034 # used by the scripts that source this file
TOOLS_CACHE=$CACHE_ROOT/tools
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=readonly

log() { printf '[chart-tools] %s\n' "$*" >&2; }
die() { printf '[chart-tools] error: %s\n' "$*" >&2; exit 1; }
