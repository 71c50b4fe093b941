# Thin wrapper over CMake: `make run` and `make test` are the README contract.
BUILD ?= build
SANITIZE ?= OFF
CMAKE_FLAGS ?=

.PHONY: all deps build run test sanitize clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNCGHL_SANITIZE=$(SANITIZE) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j2

run: build
	./$(BUILD)/ncghl serve --sandbox

test: build
	cd $(BUILD) && ctest --output-on-failure -j2

# The whole suite again under AddressSanitizer and UndefinedBehaviorSanitizer.
sanitize:
	$(MAKE) test BUILD=build-asan SANITIZE=ON

clean:
	rm -rf build build-asan
