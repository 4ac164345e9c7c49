#!/usr/bin/env bash
# Deploy the Cloud Function (2nd gen): bundle the function's source folder (main.py, the serving
# pins, the irisserve modules it imports, the verified model) and upload that folder, never the
# repository.
#
#   PROJECT_ID=my-project make deploy-function            # or: scripts/deploy_function.sh
#   PROJECT_ID=my-project DRY_RUN=1 make deploy-function  # print every command, run none
#
# Variables (defaults in brackets): PROJECT_ID (required), REGION [us-central1],
# FUNCTION [iris-predict], RUNTIME [python311], MEMORY [512MB], BUNDLE [build/cloud_function],
# MODEL_DIR [models/iris/1.0.0], IRISSERVE [.venv/bin/irisserve], ALLOW_UNAUTHENTICATED [1],
# DRY_RUN [0].
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deploy_lib.sh
source scripts/deploy_lib.sh

: "${PROJECT_ID:?set PROJECT_ID to your Google Cloud project id (DRY_RUN=1 to only print the commands)}"
REGION=${REGION:-us-central1}
FUNCTION=${FUNCTION:-iris-predict}
RUNTIME=${RUNTIME:-python311}
MEMORY=${MEMORY:-512MB}
BUNDLE=${BUNDLE:-build/cloud_function}
MODEL_DIR=${MODEL_DIR:-models/iris/1.0.0}
IRISSERVE=${IRISSERVE:-.venv/bin/irisserve}
ALLOW_UNAUTHENTICATED=${ALLOW_UNAUTHENTICATED:-1}
need_gcloud

auth=--no-allow-unauthenticated
[[ "$ALLOW_UNAUTHENTICATED" == 1 ]] && auth=--allow-unauthenticated

note "Cloud Function: $FUNCTION, project $PROJECT_ID, region $REGION, source $BUNDLE"
if [[ ! -f "$MODEL_DIR/manifest.json" ]]; then
    note "no artifact in $MODEL_DIR yet: train it"
    run "$IRISSERVE" train --out "$MODEL_DIR"
fi
note "the function's source folder (what gets uploaded)"
run "$IRISSERVE" bundle-function --out "$BUNDLE" --model-dir "$MODEL_DIR"

run gcloud services enable cloudfunctions.googleapis.com run.googleapis.com \
    cloudbuild.googleapis.com artifactregistry.googleapis.com --project "$PROJECT_ID"
note "the seed's command, with --source the bundle instead of the repository"
run gcloud functions deploy "$FUNCTION" --gen2 --runtime "$RUNTIME" --source "$BUNDLE" \
    --entry-point predict --trigger-http "$auth" --memory "$MEMORY" --region "$REGION" \
    --project "$PROJECT_ID"

note "the function URL, then a smoke test (the README's example)"
if [[ "$DRY_RUN" == 1 ]]; then
    cat << END
URL=\$(gcloud functions describe $FUNCTION --gen2 --region $REGION --project $PROJECT_ID --format 'value(serviceConfig.uri)')
curl -fsS -X POST "\$URL" -H 'Content-Type: application/json' -d '$EXAMPLE'
END
else
    url=$(gcloud functions describe "$FUNCTION" --gen2 --region "$REGION" \
        --project "$PROJECT_ID" --format 'value(serviceConfig.uri)')
    echo "function URL: $url" >&2
    run curl -fsS -X POST "$url" -H 'Content-Type: application/json' -d "$EXAMPLE"
fi
