# fedda — the two commands a new user needs are `make demo` and `make test`.
# Every target installs missing Debian packages first (scripts/install-deps.sh, idempotent).

BUILD ?= build
JOBS ?= 2
BUILD_TYPE ?= RelWithDebInfo
CMAKE_FLAGS ?=

.PHONY: all deps configure build test test-unit test-slow test-integration demo asan package clean

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS) > $(BUILD).configure.log 2>&1 \
	  || (cat $(BUILD).configure.log; exit 1)

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	@cd $(BUILD) && ctest -j $(JOBS) --output-on-failure --timeout 900

test-unit: build
	@cd $(BUILD) && ctest -j $(JOBS) --output-on-failure -L unit

test-slow: build
	@cd $(BUILD) && ctest -j $(JOBS) --output-on-failure -L slow

test-integration: build
	@cd $(BUILD) && ctest -j $(JOBS) --output-on-failure -L integration

demo: build
	@bash scripts/demo.sh $(BUILD)/bin

# Debian packages fedda-agent, fedda-coordinator and fedda-admin in $(BUILD)/packages/.
package: build
	@cd $(BUILD) && cpack -G DEB -B packages > cpack.log 2>&1 || (cat cpack.log; exit 1)
	@ls $(BUILD)/packages/*.deb

# The whole suite under AddressSanitizer and UndefinedBehaviorSanitizer.
asan:
	@$(MAKE) --no-print-directory test BUILD=build-asan BUILD_TYPE=Debug CMAKE_FLAGS=-DFEDDA_SANITIZE=ON

clean:
	rm -rf $(BUILD) build-asan $(BUILD).configure.log build-asan.configure.log
