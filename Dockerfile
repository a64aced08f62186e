# syntax=docker/dockerfile:1
# turumba-realtime: a static Go binary on a distroless base, running as
# nonroot. Build: docker build -t turumba_realtime:latest .

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/turumba-realtime ./cmd/turumba-realtime

# static-debian12 has CA certificates (the Cognito JWKS is fetched over
# HTTPS) and tzdata, and no shell: the HEALTHCHECK uses the binary itself.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/turumba-realtime /usr/local/bin/turumba-realtime
USER nonroot:nonroot
ENV PORT=3200
EXPOSE 3200
# -healthcheck GETs http://127.0.0.1:$PORT/health and exits 0 or 1.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/turumba-realtime", "-healthcheck"]
# SIGTERM starts the graceful shutdown (SHUTDOWN_TIMEOUT, default 20s): give
# the container more than that before SIGKILL (docker stop -t 25,
# stop_grace_period in compose, terminationGracePeriodSeconds in Kubernetes).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/turumba-realtime"]
