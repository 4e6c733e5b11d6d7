# Polyglot clients (Go, TypeScript, Java), buf and grpcurl.
#   make polyglot-tools     install the pinned toolchain pieces from the registries into .cache/bin
#   make polyglot-generate  regenerate every language's stubs from protos/ (scripts/generate-stubs.sh)
#   make test-polyglot      buf lint/breaking, stub freshness, each client's tests and the README grpcurl
#                           examples against live servers (tests/polyglot)
# The pytest suite under tests/polyglot also runs as part of `make test-python`; it needs the tools, so
# test-python depends on polyglot-tools.
# Go tools come from the Go module proxy; protoc and the grpc-java plugin from Maven Central; buf from
# npm (@bufbuild/buf ships the prebuilt binary: seconds instead of minutes of compiling); ts-proto from
# npm, pinned in clients/typescript/package-lock.json.

BUF_VERSION ?= 1.75.0
GRPCURL_VERSION ?= v1.9.3
PROTOC_GEN_GO_VERSION ?= v1.36.11
PROTOC_GEN_GO_GRPC_VERSION ?= v1.6.0
# Java: protoc and the grpc-java plugin from Maven Central; keep them equal to clients/java/pom.xml.
PROTOC_VERSION ?= 3.25.5
GRPC_JAVA_VERSION ?= 1.68.1
MAVEN_DEP_PLUGIN ?= org.apache.maven.plugins:maven-dependency-plugin:3.8.1

POLYGLOT_BIN := $(CURDIR)/.cache/bin
POLYGLOT_ARCH := $(shell uname -m | sed -e 's/^aarch64$$/aarch_64/' -e 's/^arm64$$/aarch_64/')
POLYGLOT_CLASSIFIER := linux-$(POLYGLOT_ARCH)
MVN ?= mvn -B -q

.PHONY: polyglot-tools polyglot-generate test-polyglot
polyglot-tools: .stamp/polyglot-go-tools .stamp/polyglot-java-tools .stamp/polyglot-buf .stamp/polyglot-npm

.stamp/polyglot-go-tools: mk/polyglot.mk
	@mkdir -p $(POLYGLOT_BIN) .stamp
	GOBIN=$(POLYGLOT_BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(POLYGLOT_BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	GOBIN=$(POLYGLOT_BIN) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
	@touch $@

.stamp/polyglot-java-tools: mk/polyglot.mk
	@mkdir -p $(POLYGLOT_BIN) .stamp
	$(MVN) $(MAVEN_DEP_PLUGIN):copy -Dartifact=com.google.protobuf:protoc:$(PROTOC_VERSION):exe:$(POLYGLOT_CLASSIFIER) \
	  -DoutputDirectory=$(POLYGLOT_BIN)
	$(MVN) $(MAVEN_DEP_PLUGIN):copy -Dartifact=io.grpc:protoc-gen-grpc-java:$(GRPC_JAVA_VERSION):exe:$(POLYGLOT_CLASSIFIER) \
	  -DoutputDirectory=$(POLYGLOT_BIN)
	install -m 755 $(POLYGLOT_BIN)/protoc-$(PROTOC_VERSION)-$(POLYGLOT_CLASSIFIER).exe $(POLYGLOT_BIN)/protoc
	install -m 755 $(POLYGLOT_BIN)/protoc-gen-grpc-java-$(GRPC_JAVA_VERSION)-$(POLYGLOT_CLASSIFIER).exe $(POLYGLOT_BIN)/protoc-gen-grpc-java
	rm -f $(POLYGLOT_BIN)/*.exe
	@touch $@

.stamp/polyglot-buf: mk/polyglot.mk
	@mkdir -p $(POLYGLOT_BIN) .stamp
	npm install --prefix .cache/buf --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
	  @bufbuild/buf@$(BUF_VERSION)
	ln -sf ../buf/node_modules/.bin/buf $(POLYGLOT_BIN)/buf
	$(POLYGLOT_BIN)/buf --version
	@touch $@

.stamp/polyglot-npm: clients/typescript/package.json clients/typescript/package-lock.json
	cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error
	@mkdir -p .stamp && touch $@

polyglot-generate: polyglot-tools
	scripts/generate-stubs.sh

test-polyglot: setup polyglot-tools
	$(PYTHON) -m pytest -q tests/polyglot

test-python: polyglot-tools
