# syntax=docker/dockerfile:1
# Build: a static binary, no cgo.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/sessiond ./cmd/sessiond

# Run: distroless static, non-root. The admin port is 8080; bind it beyond
# loopback with SESSIOND_ADMIN_ADDR=0.0.0.0:8080 and point SESSIOND_REDIS_URL
# at your Redis.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sessiond /usr/local/bin/sessiond
COPY configs/sessiond.example.yaml /etc/sessiond/sessiond.example.yaml
USER nonroot:nonroot
ENV SESSIOND_ADMIN_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sessiond"]
