#!/usr/bin/env bash
# Kommerce on a real (local) Kubernetes cluster: kind, Istio, the image built from the
# Dockerfile, the CRDs, the operator, the development backing servers (manifests/dev:
# PostgreSQL, Redis, Kafka, Elasticsearch) and the sample shop, then a wait until every
# CommerceService is Ready. Needs docker, kind, kubectl and istioctl on PATH. Safe to run
# again: every step applies or skips what already exists.
#
#   scripts/kind-up.sh                 # cluster "kommerce", image kommerce:0.1.0
#   KIND_CLUSTER=shop scripts/kind-up.sh
#   kind delete cluster --name kommerce   # to throw it away
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${KIND_CLUSTER:-kommerce}"
IMAGE="${KOMMERCE_IMAGE:-kommerce:0.1.0}"   # the tag manifests/ name
TIMEOUT="${KOMMERCE_WAIT_TIMEOUT:-10m}"
SHOP=kommerce-shop

step() { printf '\n== %s\n' "$*"; }

for tool in docker kind kubectl istioctl; do
  command -v "$tool" >/dev/null || { echo "kind-up: $tool is not on PATH" >&2; exit 1; }
done

step "kind cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
kubectl config use-context "kind-$CLUSTER"

step "Istio (istiod and its CRDs; the shop's namespace asks for sidecars)"
istioctl install --skip-confirmation --set profile=minimal

step "image $IMAGE"
docker build --tag "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "CRDs and operator"
kubectl apply --server-side -k crds/
kubectl wait --for=condition=Established --timeout=60s \
  crd/commerceservices.kommerce.io crd/bluegreenrollouts.kommerce.io \
  crd/circuitbreakerpolicies.kommerce.io crd/shardlayouts.kommerce.io
kubectl apply --server-side -k manifests/operator/
kubectl -n kommerce-system rollout status deployment/kommerce-operator --timeout="$TIMEOUT"

step "backing servers (PostgreSQL, Redis, Kafka, Elasticsearch) in $SHOP"
# The namespace first, from the samples (same fields as their kustomization applies, so the
# two applies agree): manifests/dev puts its servers there, next to the services using them.
kubectl apply --server-side -f manifests/samples/namespace.yaml
kubectl apply --server-side -k manifests/dev/
kubectl -n "$SHOP" rollout status statefulset/postgres --timeout="$TIMEOUT"
kubectl -n "$SHOP" rollout status deployment/redis --timeout="$TIMEOUT"
kubectl -n "$SHOP" rollout status statefulset/kafka --timeout="$TIMEOUT"
kubectl -n "$SHOP" rollout status statefulset/elasticsearch --timeout="$TIMEOUT"

step "sample shop"
kubectl apply --server-side -k manifests/samples/
kubectl -n "$SHOP" wait --for=condition=Ready commerceservices --all --timeout="$TIMEOUT"
kubectl -n "$SHOP" wait --for=condition=Ready bluegreenrollouts --all --timeout="$TIMEOUT"
kubectl -n "$SHOP" get commerceservices,bluegreenrollouts
echo
echo "kubectl context kind-$CLUSTER; the shop: kubectl -n $SHOP port-forward svc/gateway 8080:80"
