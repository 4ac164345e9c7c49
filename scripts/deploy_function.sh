#!/usr/bin/env bash
# Deploy the Cloud Function (2nd gen): bundle the function's source folder (main.py, the serving
# pins, the irisserve modules it imports, the verified model) and upload that folder, never the
# repository.
#
#   PROJECT_ID=my-project make deploy-function            # or: scripts/deploy_function.sh
#   PROJECT_ID=my-project make deploy-function MODEL_DIR=models/wine/1.0.0
#   PROJECT_ID=my-project DRY_RUN=1 make deploy-function  # print every command, run none
#
# Then a smoke test: GET (health) and POST the model's own example row (its manifest's).
# A new version replaces the function's source: Cloud Functions has no tagged revision to canary;
# the web service has (make canary, docs/deployment.md), and so has the function's Cloud Run service.
#
# Variables (defaults in brackets): PROJECT_ID (required unless DRY_RUN=1), REGION [us-central1],
# FUNCTION [<model name>-predict: iris-predict], RUNTIME [python311], MEMORY [512MB],
# BUNDLE [build/cloud_function], MODEL_DIR [models/iris/1.0.0, trained when missing; a folder you
# name must hold an artifact], IRISSERVE [.venv/bin/irisserve], ALLOW_UNAUTHENTICATED [1], DRY_RUN [0].
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deploy_lib.sh
source scripts/deploy_lib.sh

need_project
REGION=${REGION:-us-central1}
RUNTIME=${RUNTIME:-python311}
MEMORY=${MEMORY:-512MB}
BUNDLE=${BUNDLE:-build/cloud_function}
ALLOW_UNAUTHENTICATED=${ALLOW_UNAUTHENTICATED:-1}
if [[ -n "${MODEL_DIR:-}" ]]; then
    read_model "$MODEL_DIR"  # refuses a folder without an artifact
    FUNCTION=${FUNCTION:-$(cloud_name "$MODEL_NAME" predict)}
else
    MODEL_DIR=models/iris/1.0.0
    FUNCTION=${FUNCTION:-iris-predict}
fi
need_gcloud

auth=--no-allow-unauthenticated
[[ "$ALLOW_UNAUTHENTICATED" == 1 ]] && auth=--allow-unauthenticated

note "Cloud Function: $FUNCTION, project $PROJECT_ID, region $REGION, source $BUNDLE"
if [[ ! -f "$MODEL_DIR/manifest.json" ]]; then
    note "no Iris artifact in $MODEL_DIR yet: train it"
    run "$IRISSERVE" train --out "$MODEL_DIR"
fi
if [[ "$DRY_RUN" == 1 && ! -f "$MODEL_DIR/manifest.json" ]]; then
    EXAMPLE=$IRIS_EXAMPLE  # the row the training above records
else
    read_model "$MODEL_DIR"
fi
note "the function's source folder (what gets uploaded)"
run "$IRISSERVE" bundle-function --out "$BUNDLE" --model-dir "$MODEL_DIR" --force  # its own bundle folder, rebuilt each deploy

run gcloud services enable cloudfunctions.googleapis.com run.googleapis.com \
    cloudbuild.googleapis.com artifactregistry.googleapis.com --project "$PROJECT_ID"
note "the seed's command, with --source the bundle instead of the repository"
run gcloud functions deploy "$FUNCTION" --gen2 --runtime "$RUNTIME" --source "$BUNDLE" \
    --entry-point predict --trigger-http "$auth" --memory "$MEMORY" --region "$REGION" \
    --project "$PROJECT_ID"

note "the function URL, then a smoke test (the model's example row)"
smoke_test "$(quote gcloud functions describe "$FUNCTION" --gen2 --region "$REGION" --project "$PROJECT_ID" \
    --format 'value(serviceConfig.uri)')" "" ""
