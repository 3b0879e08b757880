# litevisor — build, test, demo, bench, install.
#
#   make                      build ./litevisor (-Wall -Wextra; DEVELOPER=1 adds -Werror)
#   make check                install missing deps, build, run every test (pytest)
#   make check SANITIZE=address,undefined
#   make demo                 install missing deps, build, run the demo job
#   make bench [QUICK=1]      side-by-side benchmark against Litestream v0.3.13
#   make install PREFIX=/usr/local
#
# O=DIR puts objects and the binary in DIR (default: build/; the default build
# also links ./litevisor). Several builds can then run side by side.

O        ?= build
PREFIX   ?= /usr/local
CC       ?= cc
# Linked at build time. LAZY_PKGS are only compiled against: the binary
# dlopens them on first use (common/lazylib.h), by the soname of the library
# the headers came with.
PKGS     := jansson yaml-0.1 liblz4 sqlite3
LAZY_PKGS := libcurl libmicrohttpd libcrypto
soname    = $(shell readelf -d $(shell pkg-config --variable=libdir $(1) 2>/dev/null)/$(2).so 2>/dev/null | \
              sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
LAZY_DEFS := $(foreach d,CURL:libcurl:libcurl MHD:libmicrohttpd:libmicrohttpd CRYPTO:libcrypto:libcrypto,\
               $(if $(call soname,$(word 2,$(subst :, ,$(d))),$(word 3,$(subst :, ,$(d)))),\
                 -DLAZY_$(word 1,$(subst :, ,$(d)))_SONAME='"$(call soname,$(word 2,$(subst :, ,$(d))),$(word 3,$(subst :, ,$(d))))"'))
VERSION  := $(shell git describe --always --dirty 2>/dev/null || echo 0.1.0)

WARN     := -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes \
            -Wno-unused-parameter -Wvla -Wpointer-arith
CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 $(WARN) -D_GNU_SOURCE -I. $(shell pkg-config --cflags $(PKGS) $(LAZY_PKGS) 2>/dev/null) \
            -MMD -MP
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -ldl -lpthread -lm
ifeq ($(DEVELOPER),1)
CFLAGS   += -Werror
endif
ifneq ($(SANITIZE),)
CFLAGS   += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS  += -fsanitize=$(SANITIZE)
endif

# Every module's sources; cmd/main.c is the only file outside the library.
LIB_SRC  := $(sort $(wildcard common/*.c replication/*.c supervisor/*.c nomad/*.c consul/*.c)) \
            $(filter-out cmd/main.c,$(sort $(wildcard cmd/*.c)))
LIB_OBJ  := $(LIB_SRC:%.c=$(O)/%.o)
MAIN_OBJ := $(O)/cmd/main.o
LIB      := $(O)/liblitevisor.a
BIN      := $(O)/litevisor
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(O)/tests/%)
# Test-only helper programs the Python tests drive (never installed).
TOOLS_SRC := $(sort $(wildcard tests/tools/*.c))
TOOLS_BIN := $(TOOLS_SRC:tests/tools/%.c=$(O)/tests/tools/%)
# LD_PRELOAD fault injectors: plain shared objects, never sanitized (they load first)
PRELOAD_SRC := $(sort $(wildcard tests/tools/preload/*.c))
PRELOAD_SO  := $(PRELOAD_SRC:tests/tools/preload/%.c=$(O)/tests/tools/%.so)

.PHONY: all deps deps-build check unit tools demo bench install clean
all: $(BIN) $(if $(filter build,$(O)),litevisor)

litevisor: $(BIN)
	ln -sf $(BIN) $@

$(BIN): $(MAIN_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(O)/common/lazy_curl.o $(O)/common/lazy_mhd.o $(O)/common/lazy_crypto.o: CFLAGS += $(LAZY_DEFS)

# Only version.o carries the version; its stamp changes only when VERSION does.
$(O)/version.stamp: FORCE
	@mkdir -p $(O)
	@echo '$(VERSION)' | cmp -s - $@ || echo '$(VERSION)' > $@
$(O)/common/version.o: $(O)/version.stamp
$(O)/common/version.o: CFLAGS += -DLITEVISOR_VERSION='"$(VERSION)"'
FORCE:

$(O)/tests/%: $(O)/tests/unit/%.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

unit: $(UNIT_BIN)

$(O)/tests/tools/%: $(O)/tests/tools/%.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(O)/tests/tools/%.so: tests/tools/preload/%.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -Wall -Wextra -Werror -fPIC -shared -o $@ $< -ldl

tools: $(TOOLS_BIN) $(PRELOAD_SO)

deps:
	@scripts/deps.sh

deps-build:
	@scripts/deps.sh --build

# The test runner is Debian's pytest (the python3 first on PATH lacks it), its
# tests spread over TEST_JOBS processes (pytest-xdist): most of a test's time is
# spent waiting on the processes it drives (backoffs, lock waits, outages), so
# four keep two cores busy: 1276 tests in about 11 minutes, against 15 with
# three (the same day, the same machine). TEST_JOBS=0: one process.
TEST_JOBS ?= 4
check: deps
	$(MAKE) all unit tools
	LITEVISOR_BIN=$(abspath $(BIN)) LITEVISOR_UNIT_DIR=$(abspath $(O)/tests) \
	  LITEVISOR_TOOLS_DIR=$(abspath $(O)/tests/tools) \
	  /usr/bin/python3 -m pytest -q -p no:cacheprovider -n $(TEST_JOBS) tests $(PYTEST_ARGS)

demo: deps-build all
	@scripts/demo.sh $(abspath $(BIN))

bench: deps all
	@scripts/bench.sh $(abspath $(BIN))

install: $(BIN)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/litevisor

clean:
	rm -rf $(O) litevisor

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(UNIT_SRC:tests/unit/%.c=$(O)/tests/unit/%.d) \
	 $(TOOLS_SRC:tests/tools/%.c=$(O)/tests/tools/%.d)
