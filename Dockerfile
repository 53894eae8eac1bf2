# syntax=docker/dockerfile:1
# Herald's edge image: a static cmd/edge on a distroless base, running as
# uid 65532 with nothing else in the image. For Docker users:
#
#   docker build -t ghcr.io/herald-push/herald:0.1.0 .
#
# Without a container engine, helm/test/cmd/herald-image builds the same
# layout (entrypoint, user, paths) on an empty base; the chart's tests
# build that one and run it.
ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
ARG TARGETOS TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/herald-edge ./cmd/edge

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/herald-edge /usr/local/bin/herald-edge
USER 65532:65532
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/herald-edge"]
