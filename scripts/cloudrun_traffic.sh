#!/usr/bin/env bash
# Move Cloud Run traffic between the canary and the stable revision that `make canary` tagged.
#
#   PROJECT_ID=my-project make promote PERCENT=10 MODEL_DIR=models/wine/1.1.0   # canary 10 %, stable 90 %
#   PROJECT_ID=my-project make promote PERCENT=100 SERVICE=wine-classifier      # all traffic to the canary
#   PROJECT_ID=my-project make rollback SERVICE=wine-classifier                 # all traffic back to stable
#   PROJECT_ID=my-project make rollback SERVICE=wine-classifier REVISION=wine-classifier-00003-abc
#
# Usage: scripts/cloudrun_traffic.sh promote|rollback. Variables (defaults in brackets): PROJECT_ID
# (required unless DRY_RUN=1), REGION [us-central1], SERVICE [after MODEL_DIR's model, as
# deploy_cloudrun.sh names it; iris-classifier], PERCENT (promote: 1 to 100), REVISION (rollback: a
# revision name instead of the $STABLE_TAG tag), CANARY_TAG [canary], STABLE_TAG [stable], DRY_RUN [0].
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deploy_lib.sh
source scripts/deploy_lib.sh

ACTION=${1:-}
PERCENT=${PERCENT:-}
REVISION=${REVISION:-}
CANARY_TAG=${CANARY_TAG:-canary}
STABLE_TAG=${STABLE_TAG:-stable}
case "$ACTION" in
    promote)
        if ! [[ "$PERCENT" =~ ^[0-9]{1,3}$ ]] || ((10#$PERCENT < 1 || 10#$PERCENT > 100)); then
            refuse "PERCENT must be a whole number from 1 to 100 (the canary's share of traffic), not '$PERCENT'"
        fi
        PERCENT=$((10#$PERCENT))
        ;;
    rollback) ;;
    *) refuse "the action must be promote or rollback, not '$ACTION'" ;;
esac
need_project
REGION=${REGION:-us-central1}
if [[ -z "${SERVICE:-}" && -n "${MODEL_DIR:-}" ]]; then
    read_model "$MODEL_DIR"
    SERVICE=$(service_name "$MODEL_NAME" "$MODEL_TASK")
fi
SERVICE=${SERVICE:-iris-classifier}
need_gcloud
where=(--platform managed --region "$REGION" --project "$PROJECT_ID")

if [[ "$ACTION" == promote ]]; then
    if ((PERCENT == 100)); then
        note "service $SERVICE: all traffic to the revision tagged $CANARY_TAG ($STABLE_TAG keeps its tag for make rollback)"
        run gcloud run services update-traffic "$SERVICE" --to-tags "$CANARY_TAG=100" "${where[@]}"
    else
        note "service $SERVICE: $PERCENT % to the revision tagged $CANARY_TAG, $((100 - PERCENT)) % to $STABLE_TAG"
        run gcloud run services update-traffic "$SERVICE" \
            --to-tags "$CANARY_TAG=$PERCENT,$STABLE_TAG=$((100 - PERCENT))" "${where[@]}"
    fi
elif [[ -n "$REVISION" ]]; then
    note "service $SERVICE: all traffic to revision $REVISION"
    run gcloud run services update-traffic "$SERVICE" --to-revisions "$REVISION=100" "${where[@]}"
else
    note "service $SERVICE: all traffic back to the revision tagged $STABLE_TAG (the one serving before the canary)"
    run gcloud run services update-traffic "$SERVICE" --to-tags "$STABLE_TAG=100" "${where[@]}"
fi
note "the traffic split now"
run gcloud run services describe "$SERVICE" "${where[@]}" \
    --format 'table(status.traffic.revisionName, status.traffic.percent, status.traffic.tag)'
