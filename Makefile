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
EXE    := bin/lua-futures

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
	@mkdir -p bin
	$(CC) -pthread $(CFLAGS) $(LDFLAGS) -Wl,-E -o $@ $(EXE_OBJS) $(CORE_OBJS) $(LUA_LIBS) -lm -ldl

$(BUILD)/futures:
	@mkdir -p $@

test: all
	@$(LUA) tools/runspecs.lua $(BUSTED) $(LUA)

demo: all
	$(EXE) examples/primes.lua

clean:
	rm -rf build bin

-include $(wildcard $(BUILD)/*.d)
