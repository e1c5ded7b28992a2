#!/usr/bin/env bash
# skserve replicas behind HAProxy on a single-node Docker Swarm: the `make cluster-*` verbs.
#
#   deploy/swarm/cluster.sh up|update|scale|status|down          (docs/cluster.md)
#
# Environment (the Makefile's variables of the same names):
#   CLUSTER_STACK  stack name (default skserve): services <stack>_api and <stack>_lb
#   REPLICAS       replicas of the api for up and scale (default 2)
#   CLUSTER_PORT   host port of the load balancer (default 8080)
#   PROMETHEUS     up: 1 to run Prometheus in the stack too (deploy/swarm/prometheus.yml)
#   PROMETHEUS_PORT  its host port (default 9090)
#   CLUSTER_IMAGE  repository of the images built (default skserve): every build is tagged
#                  <repo>:cluster-<image id>, <repo>-haproxy:cluster-<image id> (and
#                  <repo>-prometheus:cluster-<image id>), since Swarm
#                  without a registry changes nothing for a tag it has seen (moby#29676)
#   BASE_IMAGE     base of the images, as for `make docker-build`
#   LB_BASE        base of the load balancer; default the official haproxy:2.6 when BASE_IMAGE is
#                  an official python image, else BASE_IMAGE (HAProxy from its Debian package)
#   UPDATE_IMAGE   update: roll out this image, already built, instead of building one
#   WAIT_S         longest wait for every replica to be healthy (default 180)
# The app image is built with `make docker-build`, so training options (TRAIN_MODEL, TRAIN_SEED,
# ...) given to make reach it.
set -euo pipefail

stack="${CLUSTER_STACK:-skserve}"
replicas="${REPLICAS:-2}"
port="${CLUSTER_PORT:-8080}"
prometheus="${PROMETHEUS:-}"
prometheus_port="${PROMETHEUS_PORT:-9090}"
repo="${CLUSTER_IMAGE:-skserve}"
wait_s="${WAIT_S:-180}"
api="${stack}_api"
url="http://127.0.0.1:$port"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# A node label records that `up` made the swarm, so that `down` leaves only a swarm of its own.
made_label="skserve.swarm-made-by-cluster-up"

say() { echo "cluster: $*"; }
fail() { echo "cluster: $*" >&2; exit 1; }

swarm_state() { docker info --format '{{.Swarm.LocalNodeState}}'; }

ensure_swarm() {
    if [ "$(swarm_state)" = active ]; then
        return
    fi
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
    docker node update --label-add "$made_label=true" "$(docker info --format '{{.Swarm.NodeID}}')" >/dev/null
    say "made a single-node swarm (cluster-down leaves it again)"
}

# Tag a just-built image by its id, so each distinct build has a tag of its own; print that tag.
tag_by_id() {
    local built="$1" repository="$2" id
    id="$(docker image inspect --format '{{.Id}}' "$built")"
    id="${id#sha256:}"
    docker tag "$built" "$repository:cluster-${id:0:12}"
    docker image rm "$built" >/dev/null
    echo "$repository:cluster-${id:0:12}"
}

build_app() {
    make --no-print-directory -C "$root" docker-build IMAGE="$repo:cluster-build" >&2
    tag_by_id "$repo:cluster-build" "$repo"
}

# Build an image with the classic builder (no RUN --mount, so it needs no buildx plugin); its
# output, a deprecation notice included, is shown only when the build fails. Print its tag.
build_classic() {
    local what="$1" base="$2" dockerfile="$3" repository="$4" log
    log="$(DOCKER_BUILDKIT=0 docker build --quiet --build-arg "BASE_IMAGE=$base" \
        --tag "$repository:cluster-build" --file "$dockerfile" "$(dirname "$dockerfile")" 2>&1)" \
        || fail "building $what on $base failed:
$log"
    tag_by_id "$repository:cluster-build" "$repository"
}

build_lb() {
    local base="${LB_BASE:-}"
    if [ -z "$base" ]; then
        case "${BASE_IMAGE:-python:3.12-slim}" in
            python:*) base=haproxy:2.6 ;;
            *) base="$BASE_IMAGE" ;;
        esac
    fi
    build_classic "the load balancer" "$base" "$root/docker/haproxy.Dockerfile" "$repo-haproxy"
}

# Prometheus from Debian's package: any Debian base has it (the python images are Debian too).
build_prometheus() {
    build_classic Prometheus "${BASE_IMAGE:-python:3.12-slim}" "$root/deploy/prometheus/Dockerfile" "$repo-prometheus"
}

service_image() { docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "$api"; }

model_version() { docker image inspect --format '{{index .Config.Labels "skserve.model.version"}}' "$1"; }

ready_answer() {
    python3 -c 'import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1] + "/ready", timeout=2).read().decode())
except OSError:
    sys.exit(1)' "$url"
}

# Wait until the api has exactly $1 tasks, all running (which in Swarm means healthy), the load
# balancer runs and answers /ready.
wait_healthy() {
    local want="$1" deadline=$((SECONDS + wait_s)) states running
    while :; do
        states="$(docker service ps --filter desired-state=running --format '{{.CurrentState}}' "$api")"
        running="$(grep -c '^Running' <<<"$states" || true)"
        if [ "$running" = "$want" ] && [ "$(wc -l <<<"$states")" = "$want" ] \
            && docker service ps --filter desired-state=running --format '{{.CurrentState}}' "${stack}_lb" \
                | grep -q '^Running' \
            && ready_answer >/dev/null; then
            return
        fi
        [ "$SECONDS" -lt "$deadline" ] || fail "not all $want replicas healthy after ${wait_s} s:
$(docker service ps --no-trunc "$api")"
        sleep 1
    done
}

# Deploy the app image $1 behind the load balancer $2, with Prometheus $3 if not empty.
deploy() {
    local files=(--compose-file "$here/stack.yml")
    [ -z "$3" ] || files+=(--compose-file "$here/prometheus.yml")
    SKSERVE_IMAGE="$1" SKSERVE_LB_IMAGE="$2" SKSERVE_PROMETHEUS_IMAGE="$3" REPLICAS="$replicas" \
        CLUSTER_PORT="$port" PROMETHEUS_PORT="$prometheus_port" \
        docker stack deploy --detach=true --resolve-image never "${files[@]}" "$stack" >/dev/null
}

up() {
    ensure_swarm
    local app lb prom=""
    app="$(build_app)"
    lb="$(build_lb)"
    [ -z "$prometheus" ] || prom="$(build_prometheus)"
    deploy "$app" "$lb" "$prom"
    wait_healthy "$replicas"
    say "$replicas/$replicas replicas healthy, serving $app (model $(model_version "$app")) behind HAProxy ($lb)"
    say "serving on $url"
    [ -z "$prom" ] || say "Prometheus ($prom) on http://127.0.0.1:$prometheus_port"
}

update() {
    local old new now state
    old="$(service_image)"
    new="${UPDATE_IMAGE:-$(build_app)}"
    [ "$new" != "$old" ] || fail "the service runs $new already: nothing to roll out"
    say "rolling out $new (model $(model_version "$new")), one replica at a time, replacing $old"
    # `service update` exits 0 even when the update rolled back, and non-zero when the rollback had
    # trouble too: the service's image and update state tell what happened, not its exit status.
    docker service update --detach=false --quiet --no-resolve-image --image "$new" "$api" >/dev/null || true
    now="$(service_image)"
    state="$(docker service inspect --format '{{.UpdateStatus.State}}' "$api")"
    if [ "$now" = "$new" ] && [ "$state" = completed ]; then
        say "updated: every replica serves $new (model $(model_version "$new"))"
    else
        fail "rolled back: $new failed ($(docker service inspect --format '{{.UpdateStatus.Message}}' "$api")); every replica serves $now (model $(model_version "$now"))"
    fi
}

scale() {
    docker service scale --detach=false "$api=$replicas" >/dev/null 2>&1
    wait_healthy "$replicas"
    say "$replicas/$replicas replicas healthy, serving on $url"
}

status() {
    docker stack services "$stack"
    echo
    docker service ps --filter desired-state=running \
        --format 'table {{.Name}}\t{{.Image}}\t{{.Node}}\t{{.CurrentState}}' "$api"
    echo
    say "last update: $(docker service inspect --format '{{if .UpdateStatus}}{{.UpdateStatus.State}} ({{.UpdateStatus.Message}}){{else}}none{{end}}' "$api")"
    say "$url/ready: $(ready_answer || echo 'no answer')"
}

down() {
    local deadline=$((SECONDS + 60)) images
    if docker stack ls --format '{{.Name}}' 2>/dev/null | grep -qx "$stack"; then
        docker stack rm "$stack" >/dev/null
        # `stack rm` returns before the containers and the network are gone.
        while [ -n "$(docker ps --all --quiet --filter "label=com.docker.stack.namespace=$stack")$(docker network ls --quiet --filter "label=com.docker.stack.namespace=$stack")" ]; do
            [ "$SECONDS" -lt "$deadline" ] || fail "stack $stack still has containers or networks after 60 s"
            sleep 1
        done
        say "removed stack $stack"
    fi
    images="$(docker image ls --format '{{.Repository}}:{{.Tag}}' | grep -E "^($repo|$repo-haproxy|$repo-prometheus):cluster-" || true)"
    if [ -n "$images" ]; then
        # shellcheck disable=SC2086  # one image name per word
        docker image rm $images >/dev/null
        say "removed images $(echo $images)"
    fi
    if [ "$(swarm_state)" = active ] \
        && [ "$(docker node inspect self --format "{{index .Spec.Labels \"$made_label\"}}")" = true ] \
        && [ -z "$(docker service ls --quiet)" ]; then
        docker swarm leave --force >/dev/null
        # Swarm made this bridge for its containers' outside traffic and leaves it behind.
        docker network rm docker_gwbridge >/dev/null 2>&1 || true
        say "left the swarm that cluster-up made"
    fi
}

case "${1:-}" in
    up | update | scale | status | down) "$1" ;;
    *) fail "usage: $0 up|update|scale|status|down" ;;
esac
