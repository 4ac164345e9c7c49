#!/usr/bin/env bash
# Deploy the web service to Cloud Run: build the image with Cloud Build, keep it in Artifact
# Registry, and apply deploy/cloudrun/service.yaml (HTTP startup probe on /health: traffic only
# arrives once the model is loaded, which the default TCP probe cannot tell).
#
#   PROJECT_ID=my-project make deploy-cloudrun            # or: scripts/deploy_cloudrun.sh
#   PROJECT_ID=my-project DRY_RUN=1 make deploy-cloudrun  # print every command, run none
#
# Variables (defaults in brackets): PROJECT_ID (required), REGION [us-central1],
# SERVICE [iris-classifier], REPOSITORY [irisserve], TAG [git short commit],
# IMAGE [$REGION-docker.pkg.dev/$PROJECT_ID/$REPOSITORY/$SERVICE:$TAG; the seed's form
# gcr.io/$PROJECT_ID/iris-classifier works too], METHOD [replace: service.yaml; deploy: the seed's
# `gcloud run deploy` flags, which keep Cloud Run's default TCP startup probe],
# ALLOW_UNAUTHENTICATED [1], DRY_RUN [0].
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deploy_lib.sh
source scripts/deploy_lib.sh

: "${PROJECT_ID:?set PROJECT_ID to your Google Cloud project id (DRY_RUN=1 to only print the commands)}"
REGION=${REGION:-us-central1}
SERVICE=${SERVICE:-iris-classifier}
REPOSITORY=${REPOSITORY:-irisserve}
TAG=${TAG:-$(git rev-parse --short HEAD 2> /dev/null || echo latest)}
IMAGE=${IMAGE:-$REGION-docker.pkg.dev/$PROJECT_ID/$REPOSITORY/$SERVICE:$TAG}
METHOD=${METHOD:-replace}
ALLOW_UNAUTHENTICATED=${ALLOW_UNAUTHENTICATED:-1}
TEMPLATE=deploy/cloudrun/service.yaml
RENDERED=build/cloudrun/service.yaml

case "$METHOD" in
    replace | deploy) ;;
    *) echo "METHOD must be replace or deploy, not '$METHOD'" >&2; exit 2 ;;
esac
need_gcloud

note "Cloud Run: service $SERVICE, image $IMAGE, project $PROJECT_ID, region $REGION"
run gcloud services enable run.googleapis.com cloudbuild.googleapis.com \
    artifactregistry.googleapis.com --project "$PROJECT_ID"

if [[ "$IMAGE" == *-docker.pkg.dev/* ]]; then
    note "Artifact Registry repository $REPOSITORY (created when missing)"
    if [[ "$DRY_RUN" == 1 ]] || ! gcloud artifacts repositories describe "$REPOSITORY" \
        --location "$REGION" --project "$PROJECT_ID" > /dev/null 2>&1; then
        run gcloud artifacts repositories create "$REPOSITORY" --repository-format docker \
            --location "$REGION" --project "$PROJECT_ID"
    fi
fi

note "build the Dockerfile with Cloud Build and push the image"
run gcloud builds submit --tag "$IMAGE" --project "$PROJECT_ID" .

if [[ "$METHOD" == replace ]]; then
    mkdir -p "$(dirname "$RENDERED")"
    sed -e "s|\${SERVICE}|$SERVICE|g" -e "s|\${IMAGE}|$IMAGE|g" "$TEMPLATE" > "$RENDERED"
    note "apply $RENDERED ($TEMPLATE with this service name and image)"
    run gcloud run services replace "$RENDERED" --platform managed --region "$REGION" \
        --project "$PROJECT_ID"
    if [[ "$ALLOW_UNAUTHENTICATED" == 1 ]]; then
        note "public access, as the seed's --allow-unauthenticated"
        run gcloud run services add-iam-policy-binding "$SERVICE" --member allUsers \
            --role roles/run.invoker --platform managed --region "$REGION" --project "$PROJECT_ID"
    fi
else
    auth=--no-allow-unauthenticated
    [[ "$ALLOW_UNAUTHENTICATED" == 1 ]] && auth=--allow-unauthenticated
    note "the seed's command: Cloud Run's default TCP startup probe, not service.yaml's"
    run gcloud run deploy "$SERVICE" --image "$IMAGE" --platform managed --region "$REGION" \
        "$auth" --memory 512Mi --cpu 1 --project "$PROJECT_ID"
fi

note "the service URL, then a smoke test (the README's example)"
if [[ "$DRY_RUN" == 1 ]]; then
    cat << END
URL=\$(gcloud run services describe $SERVICE --platform managed --region $REGION --project $PROJECT_ID --format 'value(status.url)')
curl -fsS "\$URL/health"
curl -fsS -X POST "\$URL/predict" -H 'Content-Type: application/json' -d '$EXAMPLE'
END
else
    url=$(gcloud run services describe "$SERVICE" --platform managed --region "$REGION" \
        --project "$PROJECT_ID" --format 'value(status.url)')
    echo "service URL: $url" >&2
    run curl -fsS "$url/health"
    run curl -fsS -X POST "$url/predict" -H 'Content-Type: application/json' -d "$EXAMPLE"
fi
