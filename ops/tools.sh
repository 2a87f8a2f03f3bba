#!/usr/bin/env bash
# The deployment checks' tools, built once per machine into a user cache ($AETHER_TOOLS_CACHE, default
# ~/.cache/aether-tools: a fresh checkout, as CI uses, links them instead of building helm again) and linked into
# .aether/bin: helm and actionlint from the Go module proxy, checkov in its own virtual environment (its dependency
# pins clash with ours, docs/dependencies.md). Needs the Go toolchain; without it this exits 0 and the
# chart tests skip, saying so. Usage: ops/tools.sh [helm|actionlint|checkov]... (default: all three).
set -euo pipefail
cd "$(dirname "$0")/.."
HELM_VERSION=v4.3.2
ACTIONLINT_VERSION=v1.7.12
CHECKOV_VERSION=3.3.30
CACHE="${AETHER_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aether-tools}"
BUILT="$CACHE/bin"
BIN="$PWD/.aether/bin"
mkdir -p "$BIN" "$BUILT"

tools=("$@")
[ ${#tools[@]} -eq 0 ] && tools=(helm actionlint checkov)

go_tool() {  # name module version
  local name=$1 module=$2 version=$3 stamp="$BUILT/.$1.version"
  if ! { [ -x "$BUILT/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; }; then
    if ! command -v go >/dev/null 2>&1; then
      echo "ops/tools.sh: no Go toolchain: $name not built (the chart tests skip)" >&2
      return 0
    fi
    echo "building $name $version (once per machine, into $BUILT)" >&2
    GOBIN="$BUILT" GOFLAGS=-mod=mod go install "$module@$version"
    echo "$version" > "$stamp"
  fi
  ln -sf "$BUILT/$name" "$BIN/$name"
}

for tool in "${tools[@]}"; do
  case "$tool" in
    helm) go_tool helm helm.sh/helm/v4/cmd/helm "$HELM_VERSION" ;;
    actionlint) go_tool actionlint github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION" ;;
    checkov)
      venv="$CACHE/checkov-venv"
      if [ "$("$venv/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]; then
        echo "installing checkov $CHECKOV_VERSION into $venv (once)" >&2
        python3 -m venv "$venv" 2>/dev/null || .venv/bin/python -m venv "$venv"
        "$venv/bin/pip" install -q "checkov==$CHECKOV_VERSION"
      fi
      ln -sf "$venv/bin/checkov" "$BIN/checkov"
      ;;
    *) echo "ops/tools.sh: unknown tool $tool (helm, actionlint, checkov)" >&2; exit 2 ;;
  esac
done
