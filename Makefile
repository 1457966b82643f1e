# sessiond: make run | make test | make lint | make bench | make drill
GO      ?= go
BIN     ?= bin/sessiond
PKGS    ?= ./...

.PHONY: run build test test-short lint fuzz bench drill clean

## run: build and start the daemon on 127.0.0.1:8080 (a private redis-server
## is started when SESSIOND_REDIS_URL is unset; a demo API key is set when
## none is configured)
run: build
	SESSIOND_API_KEY=$${SESSIOND_API_KEY:-demo} \
	SESSIOND_API_SECRET=$${SESSIOND_API_SECRET:-demo-secret-change-me} \
	./$(BIN) $(if $(CONFIG),--config $(CONFIG))

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/sessiond

## test: vet, formatting and the whole suite with the race detector
test:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }
	$(GO) vet $(PKGS)
	SESSIOND_REQUIRE_REDIS=1 $(GO) test -race -count=1 -timeout 15m $(PKGS)

lint:
	gofmt -l . | (! grep .)
	$(GO) vet $(PKGS)

## fuzz: run every fuzz target for FUZZTIME each
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test $$pkg -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) || exit 1; \
	  done; \
	done

## bench: the store, expiry and delivery benchmarks
bench:
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=1x ./...

clean:
	rm -rf bin
