# syntax=docker/dockerfile:1
#
# sessiond sidecar image: a static Go binary (no cgo) on distroless/static,
# running as a numeric non-root user so that Kubernetes' runAsNonRoot can
# verify it. The exec-form ENTRYPOINT makes sessiond PID 1, so SIGTERM
# reaches it directly and its graceful shutdown runs (see README, Operators).
#
#   docker build -t sessiond .
#
# cmd/sessiond/dockerfile_test.go checks this file's shape (stages, USER,
# ENTRYPOINT) without a Docker engine: `make dockerfile-check`.

ARG GO_VERSION=1.26

# Build: a static binary, no cgo.
FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOOS=linux GOFLAGS=-trimpath
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags="-s -w" -o /out/sessiond ./cmd/sessiond

# Run: distroless static (CA certificates, tzdata, /etc/passwd; no shell).
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="sessiond" \
      org.opencontainers.image.description="Verification-session lifecycle daemon (sidecar)"
COPY --from=build /out/sessiond /usr/local/bin/sessiond
COPY configs/sessiond.example.yaml /etc/sessiond/sessiond.example.yaml
# 65532 is distroless's "nonroot"; numeric so runAsNonRoot can check it.
USER 65532:65532
# The admin port must be reachable by the kubelet's probes and Prometheus,
# so bind beyond loopback; /v1 is HMAC-authenticated, /ui/ takes a password.
ENV SESSIOND_ADMIN_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sessiond"]
