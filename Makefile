# Thin wrapper over CMake: `make run` and `make test` are the README contract.
BUILD ?= build
SANITIZE ?= OFF
CMAKE_FLAGS ?=

.PHONY: all deps build run test sanitize fuzz clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNCGHL_SANITIZE=$(SANITIZE) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j2

run: build
	./$(BUILD)/ncghl serve --sandbox

# Four at a time on two cores: the integration files mostly wait (on their
# fakes, timers and PostgreSQL), each on its own ports, store and server;
# measured: 110 s of CPU in 340 s of -j4 for the whole suite.
test: build
	cd $(BUILD) && ctest --output-on-failure -j4

# The whole suite again under AddressSanitizer and UndefinedBehaviorSanitizer.
sanitize:
	$(MAKE) test BUILD=build-asan SANITIZE=ON

# libFuzzer on every tests/fuzz target (clang, ASan, UBSan), FUZZ_SECONDS
# each. New inputs go to $(FUZZ_BUILD)/corpus/<target>; the seeds in
# tests/fuzz/corpus are only read. A crash stops with its input saved as
# $(FUZZ_BUILD)/crash-<target>-*.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= json webhook sig env map decode
fuzz:
	@scripts/deps.sh --fuzz
	@cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNCGHL_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j2 --target $(addprefix fuzz_,$(FUZZ_TARGETS))
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  dict=; [ -f tests/fuzz/$$t.dict ] && dict=-dict=tests/fuzz/$$t.dict; \
	  ./$(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$dict \
	    -artifact_prefix=$(FUZZ_BUILD)/crash-$$t- $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t \
	    || exit 1; \
	done

clean:
	rm -rf build build-asan build-fuzz
