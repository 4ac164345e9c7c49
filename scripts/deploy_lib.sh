# shellcheck shell=bash
# Shared by the deploy scripts (sourced, not run).
# The printf formats below print '$URL' and '$(...)' for the printed script to expand: SC2016 is intended.
# shellcheck disable=SC2016
# run CMD...: with DRY_RUN=1 print the command, shell-quoted, one per line, so the whole output is a
# script you can read or paste; otherwise echo it to stderr with a "+ " prefix and run it.
DRY_RUN=${DRY_RUN:-0}
IRISSERVE=${IRISSERVE:-.venv/bin/irisserve}
PYTHON=${PYTHON:-python3}
# Stands for the project in a dry run without PROJECT_ID (the printed script names it once, up front).
PLACEHOLDER_PROJECT=your-project-id

# Cloud Run's traffic block, read by the printed commands (gcloud ships with a Python; the filters its
# --format offers cannot pick one entry of a list by a field's value). Tested in tests/test_deploy.py.
# shellcheck disable=SC2034
SERVING_REVISION_PY='import json, sys; traffic = json.load(sys.stdin)["status"]["traffic"]; print(max(traffic, key=lambda entry: entry.get("percent", 0))["revisionName"])'
# shellcheck disable=SC2034
TAG_URL_PY='import json, sys; traffic = json.load(sys.stdin)["status"]["traffic"]; print(next(entry["url"] for entry in traffic if entry.get("tag") == sys.argv[1]))'

# quote WORD...: the words as shell text, each bare when it is plain, in single quotes otherwise.
quote() {
    local word line=""
    for word in "$@"; do
        if [[ -n "$word" && "$word" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
            line+=" $word"
        else
            line+=" $(squote "$word")"
        fi
    done
    printf '%s\n' "${line# }"
}

# squote TEXT: TEXT in single quotes (readable JSON in the printed commands, safe for any feature name).
squote() {
    local text=${1//\'/\'\\\'\'}
    printf "'%s'" "$text"
}

run() {
    if [[ "$DRY_RUN" == 1 ]]; then
        quote "$@"
    else
        printf '+ %s\n' "$(quote "$@")" >&2
        "$@"
    fi
}

note() {
    # A comment line in the dry-run script; progress on stderr otherwise.
    if [[ "$DRY_RUN" == 1 ]]; then printf '# %s\n' "$*"; else printf '== %s\n' "$*" >&2; fi
}

refuse() {
    # One line on stderr and exit 2: a bad input is refused before anything runs.
    printf '%s: %s\n' "$(basename "$0")" "$*" >&2
    exit 2
}

need_gcloud() {
    if [[ "$DRY_RUN" != 1 ]] && ! command -v gcloud > /dev/null; then
        refuse "gcloud not found: install the Google Cloud CLI, or use DRY_RUN=1 to print the commands"
    fi
}

need_project() {
    if [[ -n "${PROJECT_ID:-}" ]]; then return; fi
    if [[ "$DRY_RUN" != 1 ]]; then
        refuse "set PROJECT_ID to your Google Cloud project id (DRY_RUN=1 to only print the commands)"
    fi
    PROJECT_ID=$PLACEHOLDER_PROJECT
    note "PROJECT_ID is not set: $PROJECT_ID stands for it below"
}

# capture VAR COMMAND_TEXT: VAR=$(COMMAND_TEXT). A dry run prints that line; otherwise the same text
# is run (what you read is what runs) and VAR is set to its output.
capture() {
    if [[ "$DRY_RUN" == 1 ]]; then
        printf '%s=$(%s)\n' "$1" "$2"
    else
        printf '+ %s=$(%s)\n' "$1" "$2" >&2
        printf -v "$1" '%s' "$(bash -o pipefail -c "$2")"
    fi
}

# The Iris artifact's example row (irisserve train records it), for an image that trains Iris itself.
# shellcheck disable=SC2034
IRIS_EXAMPLE='{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'

need_artifact() {
    [[ -f "$1/manifest.json" ]] \
        || refuse "MODEL_DIR=$1 has no manifest.json: package a model there first (irisserve package ... --out $1)"
}

# read_model DIR: check DIR holds an artifact and set MODEL_NAME, MODEL_VERSION, MODEL_TASK and
# EXAMPLE (the manifest's own example row as JSON: the smoke tests' request body).
read_model() {
    need_artifact "$1"
    # shellcheck disable=SC2034  # read by the scripts that source this file
    EXAMPLE=$("$IRISSERVE" example --model-dir "$1")
    # shellcheck disable=SC2034  # read by the scripts that source this file
    read -r MODEL_NAME MODEL_VERSION MODEL_TASK < <("$PYTHON" -c 'import json, sys
m = json.load(open(sys.argv[1]))
print(m["name"], m["version"], m["task"])' "$1/manifest.json")
}

# cloud_name NAME SUFFIX: NAME-SUFFIX as Cloud Run services and functions accept it: lowercase letters,
# digits and hyphens, starting with a letter, at most 49 characters (my_model.v2 -> my-model-v2-SUFFIX).
cloud_name() {
    local base
    base=$(printf '%s' "$1" | LC_ALL=C tr '[:upper:]' '[:lower:]' | LC_ALL=C tr -c 'a-z0-9\n' '-')
    [[ "$base" =~ ^[a-z] ]] || base="m-$base"
    base="${base:0:$((48 - ${#2}))}"
    printf '%s-%s\n' "${base%-}" "$2"
}

# service_name NAME TASK: the Cloud Run service after the model, as Iris's: wine -> wine-classifier.
service_name() {
    if [[ "$2" == regression ]]; then cloud_name "$1" regressor; else cloud_name "$1" classifier; fi
}

# smoke_test URL_COMMAND HEALTH_PATH PREDICT_PATH: the URL from URL_COMMAND (shell text), then GET
# HEALTH_PATH and POST the model's example row to PREDICT_PATH; curl -f fails the deploy on a non-2xx.
smoke_test() {
    capture URL "$1"
    local body
    body=$(squote "$EXAMPLE")
    if [[ "$DRY_RUN" == 1 ]]; then
        printf 'curl -fsS "$URL%s"\n' "$2"
        printf 'curl -fsS -X POST "$URL%s" -H %s -d %s\n' "$3" "'Content-Type: application/json'" "$body"
    else
        echo "URL: $URL" >&2
        run curl -fsS "$URL$2"
        echo >&2
        run curl -fsS -X POST "$URL$3" -H 'Content-Type: application/json' -d "$EXAMPLE"
        echo >&2
    fi
}
