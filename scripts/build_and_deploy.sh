#!/usr/bin/env bash
# Build and push the two images, then apply the kustomize base (k8s/) with those images pinned.
#
#   REGISTRY/training-broker:TAG  from ./Dockerfile          (api, worker, beat, flower)
#   REGISTRY/trainer:TAG          from ./trainer/Dockerfile  (every PyTorchJob replica)
#
# The manifests are applied through a throwaway overlay (kustomize `images`), so k8s/ is never edited.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/build_and_deploy.sh [--dry-run] [--no-push] [--no-apply] [--secrets FILE] REGISTRY TAG

  REGISTRY   image registry and org, e.g. docker.io/acme or ghcr.io/deepfinery
  TAG        image tag, e.g. 1.0 or a git sha

Builds REGISTRY/training-broker:TAG (./Dockerfile) and REGISTRY/trainer:TAG (./trainer/Dockerfile), pushes both,
and applies k8s/ with the service image pinned to REGISTRY/training-broker:TAG (kubectl apply -k).

Options:
  --dry-run    print the docker and kubectl commands instead of running them, and print the rendered manifests
  --no-push    build only (for a local cluster that shares the Docker daemon)
  --no-apply   build and push only
  --secrets FILE
               the Secret's values, KEY=value lines (default: k8s/secret.env, git-ignored): TRAINER_API_TOKEN (or
               TRAINER_TENANT_TOKENS), FLOWER_BASIC_AUTH=user:password and REDIS_PASSWORD. The repository ships
               none; the script refuses to apply when the file is missing, a value is empty, too short, or holds a
               demo or placeholder value. A dry run prints the Secret with its values redacted.

Environment:
  DOCKER    docker CLI to use (default: docker)
  KUBECTL   kubectl CLI to use (default: kubectl); its current context is the cluster that is changed

Log in first, e.g.: echo "$DOCKERHUB_PAT" | docker login docker.io -u "$DOCKERHUB_USER" --password-stdin
Then send requests with "image": "REGISTRY/trainer:TAG" (the trainer image this script pushed).
USAGE
}

DRY_RUN=0
SECRETS_FILE=""
PUSH=1
APPLY=1
POSITIONAL=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --no-push) PUSH=0 ;;
    --no-apply) APPLY=0 ;;
    --secrets)
      [[ $# -ge 2 ]] || { echo "--secrets needs a file" >&2; usage >&2; exit 2; }
      SECRETS_FILE="$2"; shift ;;
    --secrets=*) SECRETS_FILE="${1#--secrets=}" ;;
    -*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    *) POSITIONAL+=("$1") ;;
  esac
  shift
done
if [[ ${#POSITIONAL[@]} -ne 2 ]]; then
  usage >&2
  exit 2
fi

REGISTRY="${POSITIONAL[0]%/}"
TAG="${POSITIONAL[1]}"
DOCKER="${DOCKER:-docker}"
KUBECTL="${KUBECTL:-kubectl}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECRETS_FILE="${SECRETS_FILE:-$ROOT/k8s/secret.env}"
SERVICE_IMAGE="${REGISTRY}/training-broker:${TAG}"
TRAINER_IMAGE="${REGISTRY}/trainer:${TAG}"
# The service image as k8s/kustomization.yaml names it (its `images` entry); the overlay replaces it.
BASE_SERVICE_IMAGE="ghcr.io/deepfinery/training-broker"

run() {
  if [[ "$DRY_RUN" -eq 1 ]]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# The Secret's values from the operator's file: refuse one that is missing, empty, too short, or holds a demo or
# placeholder value (the parts broker/celery_app.py's DEMO_PARTS also refuses in Flower's password).
refuse() { echo "refusing to deploy: $*; see docs/DEPLOYMENT.md (Secrets)" >&2; exit 3; }

secret_value() { sed -n "s/^$1=//p" "$SECRETS_FILE" | tail -n 1; }

check_secrets() {
  local name value pair user password token
  local -a items
  [[ -s "$SECRETS_FILE" ]] || refuse "the secrets file $SECRETS_FILE is missing or empty"
  while IFS= read -r value; do
    case "${value,,}" in
      *demo-token*|*demo-password*|*replace-me*|*changeme*|*change-me*)
        refuse "$SECRETS_FILE holds a known demo or placeholder value (${value%%=*}); set random secrets" ;;
    esac
  done < <(grep -v '^[[:space:]]*#' "$SECRETS_FILE")
  for name in FLOWER_BASIC_AUTH REDIS_PASSWORD; do
    [[ -n "$(secret_value "$name")" ]] || refuse "$name is missing or empty in $SECRETS_FILE"
  done
  [[ -n "$(secret_value TRAINER_API_TOKEN)$(secret_value TRAINER_TENANT_TOKENS)" ]] ||
    refuse "TRAINER_API_TOKEN (or TRAINER_TENANT_TOKENS) is missing or empty in $SECRETS_FILE"
  password="$(secret_value REDIS_PASSWORD)"
  [[ ${#password} -ge 16 ]] || refuse "REDIS_PASSWORD in $SECRETS_FILE is shorter than 16 characters"
  # The manifests write it into REDIS_URL as it is: only characters a URL's user info keeps literally.
  [[ "$password" =~ ^[A-Za-z0-9._~-]+$ ]] || refuse "REDIS_PASSWORD in $SECRETS_FILE may hold only A-Z a-z 0-9 . _ ~ -"
  IFS=',' read -ra items <<<"$(secret_value TRAINER_API_TOKEN)"
  for token in "${items[@]}"; do
    [[ ${#token} -ge 16 ]] || refuse "a TRAINER_API_TOKEN token in $SECRETS_FILE is shorter than 16 characters"
  done
  IFS=',' read -ra items <<<"$(secret_value FLOWER_BASIC_AUTH)"
  for pair in "${items[@]}"; do
    user="${pair%%:*}"
    password="${pair#*:}"
    [[ "$pair" == *:* && -n "$user" && ${#password} -ge 12 && "$password" != "$user" ]] ||
      refuse "FLOWER_BASIC_AUTH in $SECRETS_FILE needs user:password pairs with a password of 12 characters or more"
  done
}

# The overlay's copy of the Secret's values (mode 0600); a dry run writes the same keys with redacted values.
overlay_secrets() {
  local out="$1"
  ( umask 077; : >"$out" )
  if [[ "$DRY_RUN" -eq 1 ]]; then
    if [[ -s "$SECRETS_FILE" ]]; then
      sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1=<redacted>/p' "$SECRETS_FILE" >"$out"
    else
      printf '%s=<redacted>\n' TRAINER_API_TOKEN FLOWER_BASIC_AUTH REDIS_PASSWORD >"$out"
    fi
  else
    grep -v '^[[:space:]]*#' "$SECRETS_FILE" | grep -v '^[[:space:]]*$' >"$out"
  fi
}

# Checked before anything is built: a deploy that would be refused builds and pushes nothing.
if [[ "$APPLY" -eq 1 ]]; then
  if [[ "$DRY_RUN" -eq 1 ]]; then
    ( check_secrets ) || echo "dry run: a real deploy would refuse these secrets" >&2
  else
    check_secrets
  fi
fi

run "$DOCKER" build -t "$SERVICE_IMAGE" -f "$ROOT/Dockerfile" "$ROOT"
run "$DOCKER" build -t "$TRAINER_IMAGE" -f "$ROOT/trainer/Dockerfile" "$ROOT"
if [[ "$PUSH" -eq 1 ]]; then
  run "$DOCKER" push "$SERVICE_IMAGE"
  run "$DOCKER" push "$TRAINER_IMAGE"
fi

if [[ "$APPLY" -eq 1 ]]; then
  OVERLAY="$(mktemp -d "${TMPDIR:-/tmp}/training-broker-deploy.XXXXXX")"
  trap 'rm -rf "$OVERLAY"' EXIT
  overlay_secrets "$OVERLAY/secret.env"
  cat >"$OVERLAY/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
# The base's namespace: a kustomization's namespace applies to its own objects (the generated Secret) too.
namespace: training-broker
resources:
  - $(realpath --relative-to="$OVERLAY" "$ROOT/k8s")
secretGenerator:
  - name: training-broker-secrets
    envs:
      - secret.env
images:
  - name: ${BASE_SERVICE_IMAGE}
    newName: ${REGISTRY}/training-broker
    newTag: "${TAG}"
YAML
  if [[ "$DRY_RUN" -eq 1 ]]; then
    "$KUBECTL" kustomize "$OVERLAY"
  fi
  run "$KUBECTL" apply -k "$OVERLAY"
  run "$KUBECTL" -n training-broker rollout status deployment/training-api --timeout=300s
fi

echo "service image: $SERVICE_IMAGE" >&2
echo "trainer image: $TRAINER_IMAGE  (send it as \"image\" in training requests)" >&2
