# lua-futures — build, test and install.
#
# Variables you may override:
#   LUA_VERSION  Lua version whose headers and library are used (5.4)
#   PREFIX       install prefix (/usr/local); DESTDIR is prepended on install
#   CC, CFLAGS   compiler and its optimisation/debug flags (-O2 -g)
#   LDFLAGS      extra link flags
#   BUILD        output directory for objects and the module (build)
#   LUA          Lua interpreter used for the build helpers and tests (lua5.4)
#
# Targets: all (default), test, demo, bench, bench-quick, sanitize, fuzz,
#          install, uninstall, deps, clean.

LUA_VERSION ?= 5.4
PREFIX      ?= /usr/local
DESTDIR     ?=
CFLAGS      ?= -O2 -g
LDFLAGS     ?=
BUILD       ?= build
LUA         ?= lua$(LUA_VERSION)
BUSTED      ?= busted

LUA_CFLAGS := $(shell pkg-config --cflags lua$(LUA_VERSION) 2>/dev/null)
LUA_LIBS   := $(shell pkg-config --libs lua$(LUA_VERSION) 2>/dev/null)

WARN      := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE -fPIC -pthread $(WARN) $(LUA_CFLAGS) -Isrc -I$(BUILD) $(CFLAGS) -MMD -MP

# Objects of futures.core: linked into the shared module and the interpreter.
CORE_SRCS := $(filter-out src/lf_preload.c src/lf_process_worker.c,$(wildcard src/lf_*.c))
CORE_OBJS := $(CORE_SRCS:src/%.c=$(BUILD)/%.o)
# Objects only the interpreter has: main and the embedded Lua side.
EXE_OBJS  := $(BUILD)/main.o $(BUILD)/lf_preload.o $(BUILD)/lf_process_worker.o $(BUILD)/lf_embedded.o
LUA_SRCS  := $(wildcard lua/futures/*.lua)

MODULE := $(BUILD)/futures/core.so
EXE    ?= bin/lua-futures

.PHONY: all deps test demo bench bench-quick clean install uninstall sanitize fuzz

all: deps
	@$(MAKE) --no-print-directory $(MODULE) $(EXE)

deps:
	@sh tools/deps.sh

$(BUILD)/%.o: src/%.c | $(BUILD)/futures
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/lf_embedded.c: $(LUA_SRCS) tools/embed.lua | $(BUILD)/futures
	$(LUA) tools/embed.lua $@ $(LUA_SRCS)

$(BUILD)/lf_embedded.o: $(BUILD)/lf_embedded.c
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(MODULE): $(CORE_OBJS)
	$(CC) -shared -pthread $(CFLAGS) $(LDFLAGS) -o $@ $(CORE_OBJS) -lm

# -Wl,-E exports the Lua API from the interpreter, so that C modules loaded
# with require (which do not link liblua themselves) resolve it.
$(EXE): $(CORE_OBJS) $(EXE_OBJS)
	@mkdir -p $(dir $@)
	$(CC) -pthread $(CFLAGS) $(LDFLAGS) -Wl,-E -o $@ $(EXE_OBJS) $(CORE_OBJS) $(LUA_LIBS) -lm -ldl

$(BUILD)/futures:
	@mkdir -p $@

test: all
	@$(LUA) tools/runspecs.lua $(BUSTED) $(LUA) $(EXE)

# The suite under AddressSanitizer + UBSan, then the thread and future specs
# under ThreadSanitizer, each with its own build of the interpreter.
SAN_SPECS := spec/future_spec.lua spec/thread_pool_spec.lua spec/wait_spec.lua
sanitize: deps
	@$(MAKE) --no-print-directory BUILD=build/asan EXE=build/asan/lua-futures \
	  CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" build/asan/lua-futures
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(LUA) tools/runspecs.lua $(BUSTED) build/asan/lua-futures
	@$(MAKE) --no-print-directory BUILD=build/tsan EXE=build/tsan/lua-futures \
	  CFLAGS="-O1 -g -fsanitize=thread" LDFLAGS="-fsanitize=thread" build/tsan/lua-futures
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
	  $(LUA) tools/runspecs.lua $(BUSTED) build/tsan/lua-futures -- $(SAN_SPECS)

demo: all
	$(EXE) examples/primes.lua

clean:
	rm -rf build bin

-include $(wildcard $(BUILD)/*.d)

# ==== install, uninstall (issue 9) ==========================================
# The standard Lua layout under PREFIX; DESTDIR is prepended to every path for
# staged installs (packages), and the installed files do not mention it.
#   INSTALL_CMOD/futures/core.so   the C core             lib/lua/5.4
#   INSTALL_LMOD/futures/*.lua     the Lua side           share/lua/5.4
#   INSTALL_BIN/lua-futures        the interpreter, which a process pool finds
#                                  as the bin/ beside the lib/ of core.so
#   INSTALL_MAN/lua-futures.1      the manual page
#   INSTALL_PC/lua-futures.pc      pkg-config: version and the directories above
# Each may be overridden; the rockspec points them into a LuaRocks tree.
# `make compile` builds the module and the interpreter without the Debian
# package check of `all` (for LuaRocks and other packagers).
VERSION      := $(shell sed -n 's/^\#define LF_VERSION "\(.*\)"/\1/p' src/lf_common.h)
INSTALL_BIN  ?= $(PREFIX)/bin
INSTALL_CMOD ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
INSTALL_LMOD ?= $(PREFIX)/share/lua/$(LUA_VERSION)
INSTALL_MAN  ?= $(PREFIX)/share/man/man1
INSTALL_PC   ?= $(PREFIX)/lib/pkgconfig
INSTALL      ?= install

.PHONY: compile

compile: $(MODULE) $(EXE)

install: $(MODULE) $(EXE)
	$(INSTALL) -d $(DESTDIR)$(INSTALL_CMOD)/futures $(DESTDIR)$(INSTALL_LMOD)/futures \
	  $(DESTDIR)$(INSTALL_BIN) $(DESTDIR)$(INSTALL_MAN) $(DESTDIR)$(INSTALL_PC)
	$(INSTALL) -m 755 $(MODULE) $(DESTDIR)$(INSTALL_CMOD)/futures/core.so
	$(INSTALL) -m 644 $(LUA_SRCS) $(DESTDIR)$(INSTALL_LMOD)/futures/
	$(INSTALL) -m 755 $(EXE) $(DESTDIR)$(INSTALL_BIN)/lua-futures
	$(INSTALL) -m 644 man/lua-futures.1 $(DESTDIR)$(INSTALL_MAN)/lua-futures.1
	sed -e 's|@VERSION@|$(VERSION)|' -e 's|@PREFIX@|$(PREFIX)|' \
	  -e 's|@LUA_VERSION@|$(LUA_VERSION)|' -e 's|@INSTALL_BIN@|$(INSTALL_BIN)|' \
	  -e 's|@INSTALL_CMOD@|$(INSTALL_CMOD)|' -e 's|@INSTALL_LMOD@|$(INSTALL_LMOD)|' \
	  lua-futures.pc.in > $(DESTDIR)$(INSTALL_PC)/lua-futures.pc
	@chmod 644 $(DESTDIR)$(INSTALL_PC)/lua-futures.pc

# Removes exactly what install put there, then the futures/ directories if
# nothing else is left in them.
uninstall:
	rm -f $(DESTDIR)$(INSTALL_CMOD)/futures/core.so \
	  $(addprefix $(DESTDIR)$(INSTALL_LMOD)/futures/,$(notdir $(LUA_SRCS))) \
	  $(DESTDIR)$(INSTALL_BIN)/lua-futures $(DESTDIR)$(INSTALL_MAN)/lua-futures.1 \
	  $(DESTDIR)$(INSTALL_PC)/lua-futures.pc
	-rmdir $(DESTDIR)$(INSTALL_CMOD)/futures $(DESTDIR)$(INSTALL_LMOD)/futures 2>/dev/null || true
# ==== end of install, uninstall =============================================

# ==== bench, bench-quick (bench/README.md) ==================================
# bench: every workload, ours and Python's concurrent.futures interleaved,
# median of 5; a few minutes; writes bench/results.json (and .md).
# bench-quick: small sizes, 3 repetitions, under a minute; what CI runs so the
# benchmark never rots; writes bench/results-quick.json.
# Options go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--compare old.json".
BENCH_ARGS ?=

bench: all
	$(EXE) bench/run.lua $(BENCH_ARGS)

bench-quick: all
	$(EXE) bench/run.lua --quick $(BENCH_ARGS)
# ==== end of bench, bench-quick =============================================
