# skserve's load balancer: HAProxy with docker/haproxy.cfg (deploy/swarm, docs/cluster.md).
#
# The base defaults to the official HAProxy image. Without a registry, build it on the local
# Debian base (`make docker-base`; `make cluster-up BASE_IMAGE=skserve-base:bookworm` does so):
# HAProxy then comes from Debian's package (2.6 on bookworm). No pip, so no CA secret is needed.
ARG BASE_IMAGE=haproxy:2.6
FROM ${BASE_IMAGE}

USER 0
# The official image has HAProxy already. Debian's stable package gets security fixes under the
# same version, so it is not pinned: a pin would break the build at the first fix.
# hadolint ignore=DL3008
RUN if ! command -v haproxy >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends haproxy \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY haproxy.cfg /usr/local/etc/haproxy/haproxy.cfg

# Both images have this unprivileged user, under different ids (99 in the official image, a system
# id picked at install in Debian's), so it is named; port 8080 needs no privilege.
# hadolint ignore=DL3066
USER haproxy
EXPOSE 8080
CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
