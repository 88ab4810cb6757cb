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
Usage: scripts/build_and_deploy.sh [--dry-run] [--no-push] [--no-apply] REGISTRY TAG

  REGISTRY   image registry and org, e.g. docker.io/acme or ghcr.io/deepfinery
  TAG        image tag, e.g. 1.0 or a git sha

Builds REGISTRY/training-broker:TAG (./Dockerfile) and REGISTRY/trainer:TAG (./trainer/Dockerfile), pushes both,
and applies k8s/ with the service image pinned to REGISTRY/training-broker:TAG (kubectl apply -k).

Options:
  --dry-run    print the docker and kubectl commands instead of running them, and print the rendered manifests
  --no-push    build only (for a local cluster that shares the Docker daemon)
  --no-apply   build and push only

Environment:
  DOCKER    docker CLI to use (default: docker)
  KUBECTL   kubectl CLI to use (default: kubectl); its current context is the cluster that is changed

Log in first, e.g.: echo "$DOCKERHUB_PAT" | docker login docker.io -u "$DOCKERHUB_USER" --password-stdin
Then send requests with "image": "REGISTRY/trainer:TAG" (the trainer image this script pushed).
USAGE
}

DRY_RUN=0
PUSH=1
APPLY=1
POSITIONAL=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --no-push) PUSH=0 ;;
    --no-apply) APPLY=0 ;;
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

run "$DOCKER" build -t "$SERVICE_IMAGE" -f "$ROOT/Dockerfile" "$ROOT"
run "$DOCKER" build -t "$TRAINER_IMAGE" -f "$ROOT/trainer/Dockerfile" "$ROOT"
if [[ "$PUSH" -eq 1 ]]; then
  run "$DOCKER" push "$SERVICE_IMAGE"
  run "$DOCKER" push "$TRAINER_IMAGE"
fi

# Refuse to apply a Secret that is missing, has an empty value, or holds a value shipped as a demo anywhere.
check_secret() {
  local file="$ROOT/k8s/secret.env" name value
  [[ -s "$file" ]] || { echo "refusing to deploy: $file is missing; create it (see docs/DEPLOYMENT.md)" >&2; exit 3; }
  for name in TRAINER_API_TOKEN FLOWER_BASIC_AUTH REDIS_PASSWORD; do
    value="$(sed -n "s/^${name}=//p" "$file" | tail -n 1)"
    if [[ -z "$value" ]]; then
      echo "refusing to deploy: $name is missing or empty in $file" >&2; exit 3
    fi
    case "$value" in
      *trainer-demo-token*|*flower-demo-password*|*redis-demo-password*|*replace-me*|*changeme*|*change-me*)
        echo "refusing to deploy: $name in $file holds a known demo value; set a random secret" >&2; exit 3 ;;
    esac
  done
}

if [[ "$APPLY" -eq 1 ]]; then
  if [[ "$DRY_RUN" -eq 1 ]]; then
    ( check_secret ) || echo "dry run: a real deploy would refuse this Secret" >&2
  else
    check_secret
  fi
  OVERLAY="$(mktemp -d "${TMPDIR:-/tmp}/training-broker-deploy.XXXXXX")"
  trap 'rm -rf "$OVERLAY"' EXIT
  cat >"$OVERLAY/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$OVERLAY" "$ROOT/k8s")
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
