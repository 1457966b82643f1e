# sessiond: make run | make test | make lint | make bench | make gobench | make drill | make ui-check | make dockerfile-check
GO      ?= go
BIN     ?= bin/sessiond
PKGS    ?= ./...

.PHONY: run build test test-short lint fuzz bench gobench drill clean ui-check dockerfile-check docker

## run: build and start the daemon on 127.0.0.1:8080 (a private redis-server
## is started when SESSIOND_REDIS_URL is unset; a demo API key and UI login
## are set when none is configured, and webhooks may go to a receiver on
## this machine)
run: build
	SESSIOND_API_KEY=$${SESSIOND_API_KEY:-demo} \
	SESSIOND_API_SECRET=$${SESSIOND_API_SECRET:-demo-secret-change-me} \
	SESSIOND_UI_PASSWORD=$${SESSIOND_UI_PASSWORD:-demo-ui-password} \
	SESSIOND_WEBHOOK_ALLOW_NETWORKS=$${SESSIOND_WEBHOOK_ALLOW_NETWORKS:-127.0.0.0/8,::1/128} \
	./$(BIN) $(if $(CONFIG),--config $(CONFIG))

## build: bin/sessiond and bin/sessionctl (the command-line client)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/sessiond
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/sessionctl ./cmd/sessionctl

## test: the lint checks, then the whole suite with the race detector
test: lint
	SESSIOND_REQUIRE_REDIS=1 $(GO) test -race -count=1 -timeout 15m $(PKGS)

## lint: gofmt, go vet, go mod tidy (go.mod and go.sum must not change)
## and staticcheck (fetched by the go command at a fixed version)
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }
	$(GO) vet $(PKGS)
	$(GO) mod tidy -diff
	$(STATICCHECK) $(PKGS)

## fuzz: run every fuzz target for FUZZTIME each
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test $$pkg -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) || exit 1; \
	  done; \
	done

## bench: the load tool (cmd/sessiond-bench): a private Redis deployment
## and sessiond; idle cost (Redis commands/s, daemon CPU), cost per
## decided session (round trips, commands, Redis CPU per master, daemon
## CPU), create throughput and latency, webhook deliveries (at saturation
## and from a backlog), expiry lag and Redis memory per session, each next
## to its target, to what main measured before issue 12 and to its
## ceiling (raw Redis, bare Asynq) measured in the same run; about 2
## minutes on 2 cores. A missed target is reported, not an error.
##   TOPOLOGY=single|sentinel|cluster   the deployment (default single)
##   MIN_REPLICAS=N                     SESSIOND_REDIS_MIN_REPLICAS (default
##                                      1 on sentinel, else 0)
## e.g. make bench TOPOLOGY=cluster; make bench TOPOLOGY=sentinel MIN_REPLICAS=0.
## More flags: make bench BENCHFLAGS='--json' (go run ./cmd/sessiond-bench --help)
TOPOLOGY     ?= single
MIN_REPLICAS ?=
TOPOFLAGS     = --topology=$(TOPOLOGY) $(if $(MIN_REPLICAS),--min-replicas=$(MIN_REPLICAS))
BENCHFLAGS ?=
bench:
	$(GO) run ./cmd/sessiond-bench $(TOPOFLAGS) $(BENCHFLAGS)

## gobench: the go test benchmarks of the store, expiry and delivery
gobench:
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=1x ./...

## drill: the reliability drill (about 3 minutes): two replicas SIGKILLed
## and restarted, a flaky receiver, malformed and unsigned requests, and
## once the topology's Redis chaos: on single redis-server SIGKILLed and
## restarted (AOF), on sentinel the master SIGKILLed (failover; the report
## gives the time to the first accepted write) and brought back as a
## replica, on cluster a master SIGKILLed and restarted (AOF, nodes.conf).
## Same TOPOLOGY and MIN_REPLICAS as bench, e.g.
## make drill TOPOLOGY=sentinel MIN_REPLICAS=0. Exits 1 if an event or an
## acknowledged change is lost, a session ends in the wrong status or an
## unauthorised request succeeds. A shorter run on each topology is part
## of `go test ./...` (TestDrill in cmd/sessiond-bench).
DRILLFLAGS ?=
drill:
	$(GO) run ./cmd/sessiond-bench drill $(TOPOFLAGS) $(DRILLFLAGS)

## ui-check: load /ui/ in headless chromium (apt-get install chromium), wait
## for the queue list, save artifacts/ui-queues.png
ARTIFACTS ?= $(CURDIR)/artifacts
ui-check:
	SESSIOND_REQUIRE_REDIS=1 SESSIOND_REQUIRE_CHROMIUM=1 SESSIOND_ARTIFACTS=$(ARTIFACTS) \
	$(GO) test -count=1 -run '^TestUIInBrowser$$' -v ./cmd/sessiond/
	@echo "screenshot: $(ARTIFACTS)/ui-queues.png"

## dockerfile-check: the Dockerfile's stages, USER and ENTRYPOINT and the
## deployment examples, checked without a Docker engine (and hadolint if
## installed)
dockerfile-check:
	$(GO) test -count=1 -run '^(TestDockerfile|TestK8sSidecarExample|TestComposeExample)$$' ./cmd/sessiond/
	@if command -v hadolint >/dev/null 2>&1; then hadolint Dockerfile; fi

## docker: build the sidecar image (needs a Docker engine)
docker:
	docker build -t sessiond:local .

clean:
	rm -rf bin
