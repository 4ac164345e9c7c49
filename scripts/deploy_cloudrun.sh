#!/usr/bin/env bash
# Deploy the web service to Cloud Run: build the image with Cloud Build (the Iris default, or the
# artifact in MODEL_DIR), keep it in Artifact Registry, and either apply deploy/cloudrun/service.yaml
# (HTTP startup probe on /health: traffic only arrives once the model is loaded, which the default
# TCP probe cannot tell) or, with CANARY=1, add a tagged revision that takes no traffic yet.
# Then smoke-test it with the model's own example row. docs/deployment.md walks through the rollout.
#
#   PROJECT_ID=my-project make deploy-cloudrun                                # Iris, all traffic
#   PROJECT_ID=my-project make deploy-cloudrun MODEL_DIR=models/wine/1.0.0    # your packaged model
#   PROJECT_ID=my-project make canary MODEL_DIR=models/wine/1.1.0             # next version, 0 % traffic
#   ... DRY_RUN=1                                                             # print every command, run none
#
# Variables (defaults in brackets): PROJECT_ID (required unless DRY_RUN=1), REGION [us-central1],
# MODEL_DIR [none: the image trains Iris; else a folder inside this repository, the build context],
# SERVICE [after the model: <name>-classifier or <name>-regressor; iris-classifier],
# REPOSITORY [irisserve], TAG [git short commit, after the model's version with MODEL_DIR],
# IMAGE [$REGION-docker.pkg.dev/$PROJECT_ID/$REPOSITORY/$SERVICE:$TAG; the seed's form
# gcr.io/$PROJECT_ID/iris-classifier works too], METHOD [replace: service.yaml; deploy: the seed's
# `gcloud run deploy` flags, which keep Cloud Run's default TCP startup probe],
# CANARY [0; 1: `gcloud run deploy --no-traffic --tag $CANARY_TAG` on the existing service, after
# tagging the revision serving now $STABLE_TAG], CANARY_TAG [canary], STABLE_TAG [stable],
# ALLOW_UNAUTHENTICATED [1], DRY_RUN [0].
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deploy_lib.sh
source scripts/deploy_lib.sh

need_project
REGION=${REGION:-us-central1}
MODEL_DIR=${MODEL_DIR:-}
REPOSITORY=${REPOSITORY:-irisserve}
COMMIT=$(git rev-parse --short HEAD 2> /dev/null || echo latest)
METHOD=${METHOD:-replace}
CANARY=${CANARY:-0}
CANARY_TAG=${CANARY_TAG:-canary}
STABLE_TAG=${STABLE_TAG:-stable}
ALLOW_UNAUTHENTICATED=${ALLOW_UNAUTHENTICATED:-1}
TEMPLATE=deploy/cloudrun/service.yaml
RENDERED=build/cloudrun/service.yaml
# The Cloud Build recipe that passes --build-arg MODEL_DIR, and the upload list that keeps models/
# (gcloud's default upload list is .gitignore, which leaves models/ out).
BUILD_CONFIG=deploy/cloudrun/cloudbuild.yaml
IGNORE_FILE=deploy/cloudrun/gcloudignore

if [[ -n "$MODEL_DIR" ]]; then
    need_artifact "$MODEL_DIR"
    inside=$("$PYTHON" -c 'import os, sys; print(os.path.relpath(os.path.realpath(sys.argv[1])))' "$MODEL_DIR")
    [[ "$inside" != ../* && "$inside" != /* ]] \
        || refuse "MODEL_DIR=$MODEL_DIR is outside this repository, the image's build context: copy the artifact under models/"
    MODEL_DIR=$inside  # relative: the Dockerfile copies it from the build context
    read_model "$MODEL_DIR"
    SERVICE=${SERVICE:-$(service_name "$MODEL_NAME" "$MODEL_TASK")}
    TAG=${TAG:-$(printf '%s' "$MODEL_VERSION" | tr -c 'A-Za-z0-9_.\n-' '-')-$COMMIT}
else
    EXAMPLE=$IRIS_EXAMPLE  # the row the image's own Iris training records
    SERVICE=${SERVICE:-iris-classifier}
    TAG=${TAG:-$COMMIT}
fi
IMAGE=${IMAGE:-$REGION-docker.pkg.dev/$PROJECT_ID/$REPOSITORY/$SERVICE:$TAG}

case "$METHOD" in
    replace | deploy) ;;
    *) refuse "METHOD must be replace or deploy, not '$METHOD'" ;;
esac
case "$CANARY" in
    0 | 1) ;;
    *) refuse "CANARY must be 0 or 1, not '$CANARY'" ;;
esac
need_gcloud

note "Cloud Run: service $SERVICE, image $IMAGE, project $PROJECT_ID, region $REGION, model ${MODEL_DIR:-Iris (trained in the build)}"
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

if [[ -z "$MODEL_DIR" ]]; then
    note "build the Dockerfile with Cloud Build (it trains Iris) and push the image"
    run gcloud builds submit --tag "$IMAGE" --project "$PROJECT_ID" .
else
    note "build the Dockerfile with --build-arg MODEL_DIR=$MODEL_DIR ($BUILD_CONFIG) and push the image"
    run gcloud builds submit --config "$BUILD_CONFIG" --ignore-file "$IGNORE_FILE" \
        --substitutions "_IMAGE=$IMAGE,_MODEL_DIR=$MODEL_DIR" --project "$PROJECT_ID" .
fi

describe="$(quote gcloud run services describe "$SERVICE" --platform managed --region "$REGION" \
    --project "$PROJECT_ID") --format"
if [[ "$CANARY" == 1 ]]; then
    if [[ "$DRY_RUN" != 1 ]] && ! gcloud run services describe "$SERVICE" --platform managed \
        --region "$REGION" --project "$PROJECT_ID" > /dev/null 2>&1; then
        refuse "service $SERVICE does not exist yet: deploy it once without CANARY=1 (a canary needs a revision to compare with)"
    fi
    note "the revision serving now is tagged $STABLE_TAG: make rollback returns all traffic to it"
    capture STABLE "$describe json | $(quote "$PYTHON") -c $(squote "$SERVING_REVISION_PY")"
    if [[ "$DRY_RUN" == 1 ]]; then
        # shellcheck disable=SC2016  # "$STABLE" is for the printed script to expand
        printf '%s --update-tags "%s=$STABLE" %s\n' "$(quote gcloud run services update-traffic "$SERVICE")" \
            "$STABLE_TAG" "$(quote --platform managed --region "$REGION" --project "$PROJECT_ID")"
    else
        run gcloud run services update-traffic "$SERVICE" --update-tags "$STABLE_TAG=$STABLE" \
            --platform managed --region "$REGION" --project "$PROJECT_ID"
    fi
    note "the new image as a revision tagged $CANARY_TAG with no traffic (the service's probes and limits are kept)"
    run gcloud run deploy "$SERVICE" --image "$IMAGE" --no-traffic --tag "$CANARY_TAG" \
        --platform managed --region "$REGION" --project "$PROJECT_ID"
    note "smoke test at the $CANARY_TAG URL (the model's example), then: make promote PERCENT=10|50|100, or make rollback"
    smoke_test "$describe json | $(quote "$PYTHON") -c $(squote "$TAG_URL_PY") $CANARY_TAG" /health /predict
    exit 0
fi

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

note "the service URL, then a smoke test (the model's example row)"
smoke_test "$describe 'value(status.url)'" /health /predict
