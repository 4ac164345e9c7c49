# Shared by deploy_cloudrun.sh and deploy_function.sh (sourced, not run).
# run CMD...: with DRY_RUN=1 print the command, shell-quoted, one per line, so the whole output is a
# script you can read or paste; otherwise echo it to stderr with a "+ " prefix and run it.
DRY_RUN=${DRY_RUN:-0}

quote() {
    local line
    line=$(printf '%q ' "$@")
    printf '%s\n' "${line% }"
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

need_gcloud() {
    if [[ "$DRY_RUN" != 1 ]] && ! command -v gcloud > /dev/null; then
        echo "gcloud not found: install the Google Cloud CLI, or use DRY_RUN=1 to print the commands" >&2
        exit 2
    fi
}

# The README's example request, for the smoke tests after a deploy.
# shellcheck disable=SC2034
EXAMPLE='{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'
