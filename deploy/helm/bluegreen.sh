#!/usr/bin/env bash
# Blue/green for the aether-platform chart (docs/deployment/blue_green_rollout.md):
#   bluegreen.sh stage    RELEASE NAMESPACE TAG   the idle colour gets image TAG (migrations run first, as a hook)
#   bluegreen.sh test     RELEASE NAMESPACE       helm test: every service of the idle colour answers /readyz
#   bluegreen.sh promote  RELEASE NAMESPACE       smoke test the idle colour, then switch the live Services to it
#   bluegreen.sh rollback RELEASE NAMESPACE       switch the live Services back to the other colour (one command)
# Uses `helm` from PATH, else the one ops/tools.sh builds into .aether/bin.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
chart="$here/aether-platform"
HELM="$(command -v helm || echo "$here/../../.aether/bin/helm")"

usage() { sed -n '2,6p' "$0" >&2; exit 2; }
[ $# -ge 3 ] || usage
action=$1 release=$2 namespace=$3

active() {
  "$HELM" get values "$release" -n "$namespace" --all -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["activeColor"])'
}
other() { if [ "$1" = blue ]; then echo green; else echo blue; fi; }

# Only `stage` migrates: a flip or a rollback changes selectors alone (an older image cannot migrate a newer schema).
upgrade() { "$HELM" upgrade "$release" "$chart" -n "$namespace" --reuse-values --wait --timeout 10m "$@"; }

live=$(active)
idle=$(other "$live")
case "$action" in
  stage)
    [ $# -eq 4 ] || usage
    echo "staging $4 on $idle (live stays $live)"
    upgrade --set "colors.$idle.enabled=true" --set "colors.$idle.tag=$4" --set "smokeColor=$idle" \
      --set migrations.enabled=true --set "migrations.color=$idle"
    ;;
  test)
    upgrade --set migrations.enabled=false --set "smokeColor=$idle"
    "$HELM" test "$release" -n "$namespace" --logs
    ;;
  promote)
    upgrade --set migrations.enabled=false --set "smokeColor=$idle"
    "$HELM" test "$release" -n "$namespace" --logs
    echo "switching live traffic $live -> $idle"
    upgrade --set migrations.enabled=false --set "activeColor=$idle" --set "smokeColor=$idle"
    ;;
  rollback)
    echo "rolling back live traffic $live -> $idle"
    upgrade --set migrations.enabled=false --set "activeColor=$idle" --set "smokeColor=$idle"
    ;;
  *) usage ;;
esac
