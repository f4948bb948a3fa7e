# sluice — build, run, test.
#
#   sudo make run     install dependencies, build, start the demo
#   sudo make test    install dependencies, build, run every test
#
# Targets in the order a user meets them: deps, all, run, test, bench,
# install. `make V=1` shows the commands; `make SANITIZE=1` builds with
# AddressSanitizer and UBSan into build/asan/.

# ---- variables -------------------------------------------------------------

PREFIX    ?= /usr/local
DESTDIR   ?=
SANITIZE  ?= 0

CC        := gcc
CLANG     := clang
BPFTOOL   := bpftool
# Debian's interpreter, not the pyenv one first on PATH: only it sees
# Debian's pytest, msgpack and prometheus_client.
PYTHON    := /usr/bin/python3

ifeq ($(SANITIZE),1)
BUILD     := build/asan
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer
else
BUILD     := build
SAN_FLAGS :=
endif

# Debian package names, installed by `make deps`.
DEB_BUILD := gcc make pkg-config clang llvm libbpf-dev libxdp-dev xdp-tools \
	bpftool libevent-dev libmsgpack-dev python3-dev node-llhttp \
	libyaml-dev libhiredis-dev libcap2-bin iproute2
DEB_TEST  := libcmocka-dev python3-pytest python3-msgpack \
	python3-prometheus-client curl clang-format cppcheck \
	libclang-rt-14-dev libasan8 libubsan1 libtsan2 chromium systemd \
	redis-server
DEB_BENCH := wrk nginx-light haproxy

LLHTTP_DIR := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp

PKGS      := libbpf libxdp libevent libevent_pthreads msgpack yaml-0.1 hiredis
CFLAGS    ?= -O2 -g
CFLAGS    += -std=gnu11 -Wall -Wextra -Werror=implicit-function-declaration \
	-D_GNU_SOURCE -Iuser -I$(BUILD) -I$(LLHTTP_INC) $(SAN_FLAGS) \
	$(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDFLAGS   += $(SAN_FLAGS)
LDLIBS    := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
PY_CFLAGS := $(shell pkg-config --cflags python3-embed 2>/dev/null)
PY_LIBS   := $(shell pkg-config --libs python3-embed 2>/dev/null)

ifeq ($(V),1)
Q :=
else
Q := @
endif

VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo 0.1)

# Sources by room. Each room is a directory; a new file is picked up on its
# own. common/ is shared by every binary; front/, pool/ and bpf/ make sluiced.
COMMON_SRC := $(wildcard user/common/*.c)
FRONT_SRC  := $(wildcard user/front/*.c)
POOL_SRC   := $(wildcard user/pool/*.c)
UBPF_SRC   := $(wildcard user/bpf/*.c)
WORKER_SRC := $(wildcard user/worker/*.c)
CTL_SRC    := $(wildcard user/ctl/*.c)
BPF_SRC    := $(wildcard bpf/*.bpf.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

LLHTTP_OBJ := $(BUILD)/obj/llhttp/llhttp.o $(BUILD)/obj/llhttp/api.o \
	$(BUILD)/obj/llhttp/http.o
BPF_OBJ    := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.bpf.o,$(BPF_SRC))
SKELETONS  := $(patsubst bpf/%.bpf.c,$(BUILD)/%.skel.h,$(BPF_SRC))

SLUICED_OBJ := $(call obj,$(COMMON_SRC) $(FRONT_SRC) $(POOL_SRC) $(UBPF_SRC)) \
	$(LLHTTP_OBJ)
WORKER_OBJ  := $(call obj,$(COMMON_SRC) $(WORKER_SRC))
CTL_OBJ     := $(call obj,$(COMMON_SRC) $(CTL_SRC))

BINARIES := $(BUILD)/sluiced $(BUILD)/sluice-worker $(BUILD)/sluicectl

.PHONY: all deps run test test-unit test-integration test-bpf test-sanitize test-tsan \
	test-ops \
	bench install lint clean

# ---- all -------------------------------------------------------------------

all: $(BINARIES) $(BPF_OBJ)

# ---- deps ------------------------------------------------------------------

# run, test and bench install the packages first and then build in a new
# make: this one read pkg-config and looked for node-llhttp's sources
# before they were there, and make does not look again.

# Idempotent and quick when everything is present: dpkg-query first, apt-get
# only for what is missing.
deps:
	$(Q)missing=$$(for p in $(DEB_BUILD) $(DEB_TEST) $(DEB_BENCH); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
		grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing $$missing"; \
		if [ "$$(id -u)" != 0 ]; then \
			echo "deps: these Debian packages are missing; run 'sudo make deps'" >&2; \
			exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends \
			$$missing || exit 1; \
		if echo "$$missing" | grep -qx redis-server && \
		   systemctl is-active -q redis-server 2>/dev/null; then \
			systemctl disable --now redis-server >/dev/null 2>&1 || true; \
			echo "deps: redis-server is for the tests, which start their own: the service it just installed is stopped"; \
		fi; \
	fi
	$(Q)if [ -f /etc/nginx/sites-enabled/default ] && systemctl is-active -q nginx 2>/dev/null; then \
		systemctl disable --now nginx >/dev/null 2>&1 || true; fi

# ---- build rules -----------------------------------------------------------

$(BUILD)/sluiced: $(SLUICED_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/sluice-worker: $(WORKER_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(PY_LIBS)

$(BUILD)/sluicectl: $(CTL_OBJ)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/obj/user/worker/%.o: user/worker/%.c | $(SKELETONS)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) $(PY_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/obj/user/%.o: user/%.c | $(SKELETONS)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

# The version every part reports, rewritten only when it changes so that
# objects built at different commits never disagree.
$(BUILD)/version.h: FORCE
	@mkdir -p $(dir $@)
	@echo '#define SLUICE_VERSION "$(VERSION)"' > $@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@

$(BUILD)/obj/user/front/main.o $(BUILD)/obj/user/front/admin.o: $(BUILD)/version.h

FORCE:

# llhttp is shipped as C sources by Debian's node-llhttp; strict mode makes
# it refuse what request smuggling relies on.
$(BUILD)/obj/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) -O2 -g -fPIC $(SAN_FLAGS) -DLLHTTP_STRICT_MODE=1 -I$(LLHTTP_INC) -c -o $@ $<

# BPF: vmlinux.h from the running kernel's BTF, objects by clang, skeletons
# by bpftool. All generated, all under build/.
$(BUILD)/vmlinux.h:
	@mkdir -p $(dir $@)
	@echo "  GEN     $@"
	$(Q)$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.h) $(BUILD)/vmlinux.h
	@mkdir -p $(dir $@)
	@echo "  BPF     $<"
	$(Q)$(CLANG) -target bpf -D__TARGET_ARCH_x86 -g -O2 -Wall -I$(BUILD) -Ibpf -c -o $@ $<

$(BUILD)/%.skel.h: $(BUILD)/bpf/%.bpf.o
	@echo "  SKEL    $@"
	$(Q)$(BPFTOOL) gen skeleton $< name sluice_$* > $@.tmp && mv $@.tmp $@

# The /stats page, embedded in sluiced as a C string (front/admin.c).
$(BUILD)/stats_html.h: user/front/stats.html scripts/embed.sh
	@mkdir -p $(dir $@)
	@echo "  GEN     $@"
	$(Q)scripts/embed.sh stats_html $< > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/user/front/admin.o: $(BUILD)/stats_html.h

# Generated headers are inputs of other rules, never intermediates to delete.
.SECONDARY: $(SKELETONS) $(BPF_OBJ) $(BUILD)/vmlinux.h

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- run -------------------------------------------------------------------

# The demo: a small upstream (python3's http.server would be Python on the
# plain path, so nginx from Debian serves it), sluiced in front of it.
run: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)tests/demo/run-demo.sh $(BUILD)

# ---- test ------------------------------------------------------------------

PYTEST := $(PYTHON) -m pytest -q -p no:cacheprovider

test: deps
	$(Q)$(MAKE) --no-print-directory all lint test-unit test-integration \
		test-bpf test-sanitize test-tsan test-ops
	@echo "test: all suites passed"

test-unit: $(BUILD)/tests/unit_rules $(BUILD)/tests/unit_route \
	$(BUILD)/tests/unit_kv $(BUILD)/tests/unit_limit
	$(Q)for t in $^; do echo "  UNIT    $$t"; $$t || exit 1; done

# Unit tests link only what they exercise, so a room that is half-way
# through a change does not break another room's tests. Add objects here.
UNIT_OBJ := $(call obj,$(COMMON_SRC) user/front/route.c user/front/limit.c \
	$(POOL_SRC)) \
	$(LLHTTP_OBJ)

$(BUILD)/tests/unit_%: tests/unit/test_%.c $(UNIT_OBJ)
	@mkdir -p $(dir $@)
	@echo "  TEST    $@"
	$(Q)$(CC) $(CFLAGS) -DUNIT_TEST -o $@ $< \
		$(filter-out %/main.o,$(filter %.o,$^)) $(LDLIBS) -lcmocka

test-integration: all $(BUILD)/tests/pool_driver
	$(Q)SLUICE_BUILD=$(BUILD) $(PYTEST) tests/integration

test-bpf: all $(BUILD)/tests/sbpf_tool $(BUILD)/tests/relay_probe
	$(Q)if [ -d tests/bpf ] && ls tests/bpf/test_*.py >/dev/null 2>&1; then \
		SLUICE_BUILD=$(BUILD) $(PYTEST) tests/bpf; fi

# Deploy and operate: make install into a temporary DESTDIR, the systemd
# unit, the provisioning dry run, sluicectl, /stats in headless chromium,
# /metrics through the Prometheus parser.
test-ops: all
	$(Q)SLUICE_BUILD=$(BUILD) $(PYTEST) tests/ops

# tests/bpf's driver: user/bpf/ without the front.
$(BUILD)/tests/sbpf_tool: tests/bpf/sbpf_tool.c $(call obj,$(COMMON_SRC) $(UBPF_SRC))
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(filter %.o,$^) $(LDLIBS)

# tests/bpf's relay probe: a TCP proxy on user/front/relay*.c alone.
RELAY_SRC := $(wildcard user/front/relay*.c)
$(BUILD)/tests/relay_probe: tests/bpf/relay_probe.c $(call obj,$(COMMON_SRC) $(RELAY_SRC) $(UBPF_SRC))
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(filter %.o,$^) $(LDLIBS)

# tests/pool's driver: user/pool/ without the front.
$(BUILD)/tests/pool_driver: tests/pool/pool_driver.c $(call obj,$(COMMON_SRC) $(POOL_SRC))
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(filter %.o,$^) $(LDLIBS)

# The bench's floor under a hook visit: a bare round trip to another process.
$(BUILD)/tests/round_trip: tests/bench/round_trip.c
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $<

# The same integration suite against an ASan/UBSan build. A report fails the
# run: halt_on_error plus the sanitizer exit code.
test-sanitize:
	$(Q)if [ "$(SANITIZE)" != 1 ]; then \
		$(MAKE) --no-print-directory SANITIZE=1 all \
			build/asan/tests/pool_driver && \
		ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		SLUICE_BUILD=build/asan SLUICE_SANITIZE=1 $(PYTEST) tests/integration; fi

# The pool's lock and lanes, and the front threads around them, under
# ThreadSanitizer: the hooked-request suites against a TSan build of sluiced
# (with the sluice-worker of this build: its C side has one thread). A report
# stops sluiced, which fails the test that was running.
TSAN_TESTS := tests/integration/test_pool_failures.py \
	tests/integration/test_pool_lifecycle.py \
	tests/integration/test_worker_hooks.py \
	tests/integration/test_hooked_front.py \
	tests/integration/test_store_redis.py
test-tsan: all
	$(Q)$(MAKE) --no-print-directory BUILD=build/tsan \
		SAN_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
		build/tsan/sluiced
	$(Q)ln -sfn $(abspath $(BUILD))/sluice-worker build/tsan/sluice-worker
	$(Q)TSAN_OPTIONS=halt_on_error=1 SLUICE_BUILD=build/tsan \
		SLUICE_SANITIZE=1 $(PYTEST) $(TSAN_TESTS)

lint:
	$(Q)clang-format --dry-run --Werror $$(git ls-files 'user/*.[ch]' 'bpf/*.[ch]' 'tests/unit/*.c' 'tests/bench/*.c' 2>/dev/null)
	$(Q)cppcheck -q --error-exitcode=1 --enable=warning,portability \
		--inline-suppr --suppress=missingIncludeSystem \
		--suppress=unknownMacro:bpf/*.bpf.c -Iuser user bpf

# ---- bench -----------------------------------------------------------------

# `make bench BENCH_ARGS=--quick` (or --only plain|hooks|splice, --rounds N,
# --duration S): see docs/bench.md.
bench: deps
	$(Q)$(MAKE) --no-print-directory all $(BUILD)/tests/round_trip
	$(Q)SLUICE_BUILD=$(BUILD) $(PYTHON) tests/bench/bench.py $(BENCH_ARGS)

# ---- install ---------------------------------------------------------------

install: all
	$(Q)scripts/install.sh "$(DESTDIR)" "$(PREFIX)" "$(BUILD)"

clean:
	rm -rf build
