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
#   MPICC        the MPI compiler wrapper whose flags build futures/mpi.so
#                (found on the PATH; MPICC= builds without MPI)
#
# Targets: all (default), test, demo, bench, bench-quick, sanitize, valgrind,
#          faults, fuzz, layers, install, uninstall, deps, clean.

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

# Objects of futures.core, linked into the shared module and the
# interpreter, by layer from the bottom up: a file knows only the files
# listed before it (`make layers` checks it from the objects; see
# docs/internals.md).
LAYER_BASE   := lf_fault lf_spin
LAYER_CODEC  := lf_buf lf_region lf_lend lf_wire lf_names lf_encode lf_decode
LAYER_FUTURE := lf_future
LAYER_SHARE  := lf_squeue lf_sarray
LAYER_STATE  := lf_error lf_state lf_task
LAYER_EXEC   := lf_executor lf_context
LAYER_ENGINE := lf_thread_pool lf_interp lf_pshare lf_process_pool
LAYER_FACE   := lf_core_lua lf_codec_lua lf_future_lua lf_executor_lua lf_squeue_lua \
  lf_sarray_lua lf_api
LAYER_ENTRY  := lf_module
CORE_NAMES := $(LAYER_BASE) $(LAYER_CODEC) $(LAYER_FUTURE) $(LAYER_SHARE) $(LAYER_STATE) \
  $(LAYER_EXEC) $(LAYER_ENGINE) $(LAYER_FACE) $(LAYER_ENTRY)
CORE_SRCS := $(CORE_NAMES:%=src/%.c)
CORE_OBJS := $(CORE_NAMES:%=$(BUILD)/%.o)
# Objects only the interpreter has: main and the embedded Lua side.
EXE_NAMES := lf_preload lf_process_worker main
EXE_OBJS  := $(BUILD)/lf_embedded.o $(EXE_NAMES:%=$(BUILD)/%.o)
LUA_SRCS  := $(wildcard lua/futures/*.lua)

MODULE := $(BUILD)/futures/core.so
EXE    ?= bin/lua-futures
# futures._test: the specs' hooks into the core, never installed.
TEST_MODULE := $(BUILD)/futures/_test.so

# futures.mpi: the MPIPoolExecutor (docs/mpi.md), a companion module like
# _test.so (it reaches the core through lf_api.h only), built only where
# mpicc is. Its objects are the only ones that see mpi.h and link libmpi;
# the core and the interpreter never do (lua-futures --mpi loads it).
MPICC       ?= $(shell command -v mpicc 2>/dev/null)
MPI_NAMES   := lf_mpi_link lf_mpi_pool lf_mpi_serve lf_mpi_world lf_mpi_lua
ifneq ($(MPICC),)
MPI_CFLAGS  := $(patsubst -I%,-isystem %,$(shell $(MPICC) -showme:compile 2>/dev/null \
  || pkg-config --cflags mpi 2>/dev/null))
MPI_LIBS    := $(shell $(MPICC) -showme:link 2>/dev/null || pkg-config --libs mpi 2>/dev/null)
MPI_MODULE  := $(BUILD)/futures/mpi.so
MPI_OBJS    := $(MPI_NAMES:%=$(BUILD)/%.o)
endif

.PHONY: all deps test demo bench bench-quick clean install uninstall sanitize fuzz layers

all: deps
	@$(MAKE) --no-print-directory $(MODULE) $(EXE) $(TEST_MODULE) $(MPI_MODULE)

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

$(TEST_MODULE): $(BUILD)/lf_test.o
	$(CC) -shared -pthread $(CFLAGS) $(LDFLAGS) -o $@ $< -ldl

$(BUILD)/lf_mpi_%.o: src/lf_mpi_%.c | $(BUILD)/futures
	$(CC) $(ALL_CFLAGS) $(MPI_CFLAGS) -c $< -o $@

$(MPI_MODULE): $(MPI_OBJS)
	$(CC) -shared -pthread $(CFLAGS) $(LDFLAGS) -o $@ $(MPI_OBJS) $(MPI_LIBS) -ldl -lm

# -Wl,-E exports the Lua API from the interpreter, so that C modules loaded
# with require (which do not link liblua themselves) resolve it.
$(EXE): $(CORE_OBJS) $(EXE_OBJS)
	@mkdir -p $(dir $@)
	$(CC) -pthread $(CFLAGS) $(LDFLAGS) -Wl,-E -o $@ $(EXE_OBJS) $(CORE_OBJS) $(LUA_LIBS) -lm -ldl

$(BUILD)/futures:
	@mkdir -p $@

# The MPI specs (spec/mpi_*_spec.lua, left out of the plain runs by .busted)
# run under `mpiexec -n 3`, rank 0 running busted, with what a root CI
# container needs: run as root, 3 ranks on fewer cores, the ob1 PML (the
# other ones probe for networks for a third of a second), no binding to
# cores (a rank's worker processes inherit it).
MPI_NP   ?= 3
MPI_ENV  := OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_pml=ob1 \
  OMPI_MCA_hwloc_base_binding_policy=none
MPIEXEC  ?= $(shell command -v mpiexec 2>/dev/null)
MPI_SKIP_WHY   = $(if $(MPI_MODULE),mpiexec was not found,mpicc was not found: futures/mpi.so was not built)
MPI_SPEC_ARGS  = $(if $(and $(MPI_MODULE),$(MPIEXEC)),--mpi="env $(MPI_ENV) $(MPIEXEC)" --mpi-np=$(MPI_NP),\
  --mpi-skip="$(MPI_SKIP_WHY) (apt-get install openmpi-bin libopenmpi-dev)")

test: all layers
	@$(LUA) tools/runspecs.lua $(BUSTED) $(LUA) $(EXE) $(MPI_SPEC_ARGS)

# layers: fails when an object of the core uses a symbol defined by an
# object listed after it (a back-call), which is how cycles start; and when
# a companion module (futures/mpi.so) uses the core's symbols instead of its
# API table (lf_api.h), which plain lua5.4 could not load.
layers: $(CORE_OBJS) $(EXE_OBJS) $(MPI_OBJS)
	@$(LUA) tools/layers.lua $(CORE_OBJS) $(EXE_OBJS) $(if $(MPI_OBJS),-- $(MPI_OBJS))

# sanitize, valgrind and faults: see their block below.

demo: all
	$(EXE) examples/primes.lua

clean:
	rm -rf build bin

-include $(wildcard $(BUILD)/*.d)

# ==== install, uninstall =====================================================
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

compile: $(MODULE) $(EXE) $(MPI_MODULE)

install: $(MODULE) $(EXE) $(MPI_MODULE)
	$(INSTALL) -d $(DESTDIR)$(INSTALL_CMOD)/futures $(DESTDIR)$(INSTALL_LMOD)/futures \
	  $(DESTDIR)$(INSTALL_BIN) $(DESTDIR)$(INSTALL_MAN) $(DESTDIR)$(INSTALL_PC)
	$(INSTALL) -m 755 $(MODULE) $(DESTDIR)$(INSTALL_CMOD)/futures/core.so
	$(if $(MPI_MODULE),$(INSTALL) -m 755 $(MPI_MODULE) $(DESTDIR)$(INSTALL_CMOD)/futures/mpi.so)
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
	rm -f $(DESTDIR)$(INSTALL_CMOD)/futures/core.so $(DESTDIR)$(INSTALL_CMOD)/futures/mpi.so \
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

# ==== sanitize, valgrind, faults ============================================
# sanitize: the whole suite under an interpreter built with AddressSanitizer
#   and UBSan (build/asan/lua-futures: core, main and embedded Lua side
#   instrumented; liblua5.4 and busted's C modules are the system's); then
#   the thread and future specs under plain lua5.4 with the ASan build of
#   futures/core.so (LD_PRELOAD: the module path, where lua_close unloads
#   core.so after joining the workers); then the thread, future and process
#   specs under a ThreadSanitizer build. Process-pool workers of a sanitized
#   host are that same sanitized binary. Every report of every sanitized
#   process goes to a file in build/<san>/reports/ (log_path: specs capture
#   the stderr of what they run, so a report on stderr could go unseen), and
#   the target fails when one is there. Specs that run other programs
#   (examples, docs and the command line through bin/lua-futures, plain
#   lua5.4 with build/futures/core.so) run the normal build there, as in
#   `make test`. Suppressions: tools/sanitize/*.supp, each entry with why it
#   is not our bug.
# valgrind: memcheck over the thread and future specs (and helgrind, see
#   below); faults: fault injection (spec/fault_driver.lua).
comma       := ,
SAN_REPORTS  = $(CURDIR)/$(1)/reports
ASAN_FLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
TSAN_FLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
# handle_segv=0: specs send SIGSEGV to worker processes on purpose and
# expect them to die of it; a real crash still fails the spec or the run.
ASAN_ENV     = ASAN_OPTIONS=detect_leaks=1:handle_segv=0:log_path=$(call SAN_REPORTS,build/asan)/asan \
  LSAN_OPTIONS=suppressions=$(CURDIR)/tools/sanitize/lsan.supp:print_suppressions=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(call SAN_REPORTS,build/asan)/ubsan
TSAN_ENV     = TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 handle_segv=0 log_path=$(call SAN_REPORTS,build/tsan)/tsan suppressions=$(CURDIR)/tools/sanitize/tsan.supp"
# ThreadSanitizer slows the stress spec's 100 000-task loops ten-fold; a
# quarter of the counts still races every hand-off thousands of times.
TSAN_STRESS ?= 0.25
# Specs with threads and futures but no child process of their own.
SAN_MODULE_SPECS := spec/core_spec.lua spec/future_spec.lua spec/thread_pool_spec.lua \
  spec/wait_spec.lua spec/bad_input_spec.lua
SAN_SPECS := $(SAN_MODULE_SPECS) spec/stress_spec.lua spec/process_pool_spec.lua \
  spec/eventloop_spec.lua spec/queue_spec.lua spec/shared_array_spec.lua \
  spec/progress_spec.lua spec/stop_spec.lua spec/big_frames_spec.lua
# Skipped under sanitizers: the specs that time two CPU-bound tasks side by side,
# which instrumentation (and a busy CI machine) changes; `make test` runs them.
SAN_SKIP := --filter-out=CPU.bound.Lua.tasks.at.the.same.time
LIBASAN = $(shell $(CC) -print-file-name=libasan.so)
# Fails when a sanitizer wrote a report (one file per process).
san_check = @if [ -n "$$(ls -A $(call SAN_REPORTS,$(1)) 2>/dev/null)" ]; then \
  cat $(call SAN_REPORTS,$(1))/*; \
  echo "sanitize: $$(ls $(call SAN_REPORTS,$(1)) | wc -l) report(s) in $(call SAN_REPORTS,$(1))"; \
  exit 1; else echo "sanitize: no report from $(1)"; fi

.PHONY: sanitize sanitize-asan sanitize-tsan sanitize-mpi valgrind faults

sanitize: sanitize-asan sanitize-tsan sanitize-mpi

sanitize-asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan EXE=build/asan/lua-futures \
	  CFLAGS="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" \
	  build/asan/lua-futures build/asan/futures/core.so build/asan/futures/_test.so
	@rm -rf $(call SAN_REPORTS,build/asan) && mkdir -p $(call SAN_REPORTS,build/asan)
	$(ASAN_ENV) $(LUA) tools/runspecs.lua $(BUSTED) build/asan/lua-futures -- \
	  --cpath=./build/asan/?.so $(SAN_SKIP)
	$(ASAN_ENV) LD_PRELOAD=$(LIBASAN) LUA_FUTURES_WORKER=$(CURDIR)/build/asan/lua-futures \
	  LUA_FUTURES_SPEC_INTERP=$(LUA) $(LUA) $$(command -v $(BUSTED)) --ignore-lua \
	  --cpath=./build/asan/?.so $(SAN_SKIP) $(SAN_MODULE_SPECS)
	$(call san_check,build/asan)

sanitize-tsan: deps
	@$(MAKE) --no-print-directory BUILD=build/tsan EXE=build/tsan/lua-futures \
	  CFLAGS="$(TSAN_FLAGS)" LDFLAGS="-fsanitize=thread" build/tsan/lua-futures \
	  build/tsan/futures/_test.so
	@rm -rf $(call SAN_REPORTS,build/tsan) && mkdir -p $(call SAN_REPORTS,build/tsan)
	$(TSAN_ENV) LUA_FUTURES_STRESS=$(TSAN_STRESS) \
	  $(LUA) tools/runspecs.lua $(BUSTED) build/tsan/lua-futures -- \
	  --cpath=./build/tsan/?.so $(SAN_SKIP) $(SAN_SPECS)
	$(call san_check,build/tsan)

# sanitize-mpi: the MPI specs (spec/mpi_*_spec.lua but the launch one) as
#   rank 0 of `mpiexec -n 3`, with the ASan/UBSan interpreter and
#   futures/mpi.so, then with the TSan ones: every rank and every rank's
#   worker process is instrumented. Open MPI is not: what it leaks at
#   MPI_Finalize and how its own threads lock are suppressed
#   (tools/sanitize/lsan-mpi.supp, tsan-mpi.supp; LeakSanitizer needs the
#   slow unwinder to see through libmpi's frames). Skipped without MPI.
MPI_SAN_SPECS = $(filter-out spec/mpi_launch_spec.lua,$(wildcard spec/mpi_*_spec.lua))
MPI_SAN_RUN   = $(MPI_ENV) LUA_CPATH_5_4='./build/$(1)/?.so;;' \
  LUA_FUTURES_SPEC_INTERP=build/$(1)/lua-futures $(MPIEXEC) -n $(MPI_NP) \
  build/$(1)/lua-futures --mpi $$(command -v $(BUSTED)) --ignore-lua \
  --cpath=./build/$(1)/?.so $(MPI_SAN_SPECS)

sanitize-mpi: deps
ifneq ($(and $(MPI_MODULE),$(MPIEXEC)),)
	@$(MAKE) --no-print-directory BUILD=build/asan EXE=build/asan/lua-futures \
	  CFLAGS="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" \
	  build/asan/lua-futures build/asan/futures/mpi.so
	@rm -rf $(call SAN_REPORTS,build/asan-mpi) && mkdir -p $(call SAN_REPORTS,build/asan-mpi)
	ASAN_OPTIONS=detect_leaks=1:handle_segv=0:fast_unwind_on_malloc=0:log_path=$(call SAN_REPORTS,build/asan-mpi)/asan \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tools/sanitize/lsan.supp:suppressions=$(CURDIR)/tools/sanitize/lsan-mpi.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(call SAN_REPORTS,build/asan-mpi)/ubsan \
	  $(call MPI_SAN_RUN,asan)
	$(call san_check,build/asan-mpi)
	@$(MAKE) --no-print-directory BUILD=build/tsan EXE=build/tsan/lua-futures \
	  CFLAGS="$(TSAN_FLAGS)" LDFLAGS="-fsanitize=thread" build/tsan/lua-futures \
	  build/tsan/futures/mpi.so
	@rm -rf $(call SAN_REPORTS,build/tsan-mpi) && mkdir -p $(call SAN_REPORTS,build/tsan-mpi)
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 handle_segv=0 log_path=$(call SAN_REPORTS,build/tsan-mpi)/tsan suppressions=$(CURDIR)/tools/sanitize/tsan-mpi.supp" \
	  $(call MPI_SAN_RUN,tsan)
	$(call san_check,build/tsan-mpi)
else
	@echo "sanitize-mpi: skipped: $(MPI_SKIP_WHY)"
endif

# valgrind: memcheck over VG_SPECS (the thread, future, wait, bad-input,
#   process-pool, queue and shared-array specs, and the stress spec at 1/50
#   of its counts), then helgrind over the thread, future and queue specs,
#   with build/valgrind/lua-futures
#   (-gdwarf-4: valgrind 3.19 cannot read every DWARF 5 form). Process-pool
#   workers run outside valgrind: LUA_FUTURES_WORKER names the interpreter,
#   since under valgrind /proc/self/exe is valgrind's own tool binary.
#   Each tool writes one log per process to build/valgrind/reports/, and the
#   target fails unless every log ends with "ERROR SUMMARY: 0 errors"; a
#   block definitely or indirectly lost counts as an error. Helgrind does not
#   model C11 atomics: tools/sanitize/helgrind.supp lists the acquire/release
#   hand-offs it reports (ThreadSanitizer, which models them, checks those).
VG_SPECS := spec/core_spec.lua spec/future_spec.lua spec/thread_pool_spec.lua \
  spec/wait_spec.lua spec/bad_input_spec.lua spec/stress_spec.lua spec/process_pool_spec.lua \
  spec/queue_spec.lua spec/shared_array_spec.lua spec/stop_spec.lua spec/big_frames_spec.lua
HG_SPECS := spec/future_spec.lua spec/thread_pool_spec.lua spec/wait_spec.lua spec/queue_spec.lua
VG_EXE   := build/valgrind/lua-futures
VG_RUN    = LUA_FUTURES_SPEC_INTERP=$(VG_EXE) LUA_FUTURES_WORKER=$(CURDIR)/$(VG_EXE) \
  LUA_FUTURES_STRESS=0.02 valgrind --error-exitcode=99 \
  --log-file=$(CURDIR)/build/valgrind/reports/$(1).%p
# (The specs of how a pool finds its interpreter are skipped: they run
# plain lua5.4, and LUA_FUTURES_WORKER, set here, would answer for them.)
VG_LUA    = $(VG_EXE) $$(command -v $(BUSTED)) --ignore-lua $(SAN_SKIP) \
  --cpath=./build/valgrind/?.so --filter-out=finds.its.worker.interpreter
# A log with no summary is a child that ran another program (exec ends
# valgrind there); a crash still prints its summary.
vg_check  = @bad=0; for f in build/valgrind/reports/*; do \
  if grep -q "ERROR SUMMARY" $$f && ! grep -q "ERROR SUMMARY: 0 errors" $$f; then \
  cat $$f; bad=$$((bad + 1)); fi; done; \
  echo "valgrind: $$(grep -l "ERROR SUMMARY" build/valgrind/reports/* | wc -l) process log(s), $$bad with errors"; \
  [ $$bad -eq 0 ]

valgrind: deps
	@$(MAKE) --no-print-directory BUILD=build/valgrind EXE=$(VG_EXE) \
	  CFLAGS="-O1 -g -gdwarf-4" $(VG_EXE) build/valgrind/futures/_test.so
	@rm -rf build/valgrind/reports && mkdir -p build/valgrind/reports
	$(call VG_RUN,memcheck) --tool=memcheck --leak-check=full \
	  --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
	  $(VG_LUA) $(VG_SPECS)
	$(call VG_RUN,helgrind) --tool=helgrind \
	  --suppressions=$(CURDIR)/tools/sanitize/helgrind.supp $(VG_LUA) $(HG_SPECS)
	$(vg_check)

# faults: build/fault/lua-futures, with AddressSanitizer and
#   -DLF_FAULT_INJECTION, its own objects linked with --wrap for the calls of
#   src/lf_fault.c (liblua and libc keep the real ones), then
#   spec/fault_driver.lua runs a set of operations once per fault point
#   (N = 1, 2, 3, ... of each class), each run in its own process under
#   `timeout`, and checks that every run ends in success or a clean error,
#   with no crash, hang, leak or ASan report. FAULTS_ARGS passes options to
#   the driver (--quick, --ops=..., --classes=...).
FAULT_WRAP  := malloc calloc realloc strdup pthread_create socketpair pipe pipe2 \
  eventfd posix_spawn memfd_create mmap mremap luaopen_futures_core
FAULTS_ARGS ?=

faults: deps
	@$(MAKE) --no-print-directory BUILD=build/fault EXE=build/fault/lua-futures \
	  CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address -DLF_FAULT_INJECTION" \
	  LDFLAGS="-fsanitize=address $(addprefix -Wl$(comma)--wrap=,$(FAULT_WRAP))" \
	  build/fault/lua-futures
	$(LUA) spec/fault_driver.lua build/fault/lua-futures $(FAULTS_ARGS)
# ==== end of sanitize, valgrind, faults =====================================

# ==== fuzz ==================================================================
# fuzz: the codec's decoder fed random, truncated, bit-flipped and resealed
#   inputs for FUZZ_SECONDS under ASan/UBSan (fuzz/codec_fuzz.c says how
#   each input is decoded). The target runs against the core objects (src/
#   lf_*.c but the interpreter's) compiled with the same flags into
#   build/fuzz/, with lua_load of lf_decode.c routed through the target. With
#   clang and libFuzzer (FUZZ_CC) it is a libFuzzer run; otherwise
#   fuzz/fuzz_main.c's mutation loop, built with $(CC) into
#   build/fuzz/loop/. Seeds: fuzz/seeds.lua's valid encodings (build/fuzz/
#   seed/) plus spec/corpus/; a crashing input is saved as
#   spec/corpus/crash-* (spec/codec_spec.lua replays that directory). Fails
#   on any finding. FUZZ_ARGS: more libFuzzer options (-jobs=2, -seed=1).
FUZZ_SECONDS ?= 60
FUZZ_ARGS    ?=
FUZZ_BUILD   := build/fuzz
FUZZ_CC      ?= clang
FUZZ_FLAGS   := -std=c11 -D_GNU_SOURCE -pthread -g -O1 -fno-omit-frame-pointer \
  -fsanitize=address,undefined -fno-sanitize-recover=undefined $(WARN) $(LUA_CFLAGS) -Isrc -MMD -MP
FUZZ_LOAD    := -Dlua_load=lf_fuzz_lua_load
FUZZ_LIBS    := $(LUA_LIBS) -lm -ldl -pthread
FUZZ_ENV     := ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  LF_FUZZ_SEEDS=$(FUZZ_BUILD)/seed
FUZZ_PROBE   := int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }
FUZZ_OBJS     = $(CORE_SRCS:src/%.c=$(1)/%.o) $(1)/codec_fuzz.o

.PHONY: fuzz-seeds

fuzz: all fuzz-seeds
	@if printf '%s\n' '$(FUZZ_PROBE)' | $(FUZZ_CC) -x c -fsanitize=fuzzer - -o $(FUZZ_BUILD)/probe >/dev/null 2>&1; then \
	  echo "fuzz: libFuzzer ($(FUZZ_CC)) for $(FUZZ_SECONDS) s"; \
	  $(MAKE) --no-print-directory $(FUZZ_BUILD)/codec_fuzz && \
	  $(FUZZ_ENV) $(FUZZ_BUILD)/codec_fuzz -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	    -rss_limit_mb=2048 -artifact_prefix=spec/corpus/ -print_final_stats=1 $(FUZZ_ARGS) \
	    $(FUZZ_BUILD)/corpus; \
	else \
	  echo "fuzz: built-in mutation loop ($(CC)) for $(FUZZ_SECONDS) s"; \
	  $(MAKE) --no-print-directory $(FUZZ_BUILD)/loop/codec_fuzz_loop && \
	  $(FUZZ_ENV) $(FUZZ_BUILD)/loop/codec_fuzz_loop $(FUZZ_SECONDS) spec/corpus $(FUZZ_BUILD)/corpus; \
	fi

fuzz-seeds: all
	@rm -rf $(FUZZ_BUILD)/seed $(FUZZ_BUILD)/corpus
	@mkdir -p $(FUZZ_BUILD)/seed $(FUZZ_BUILD)/corpus spec/corpus
	@$(EXE) fuzz/seeds.lua $(FUZZ_BUILD)/seed
	@cp spec/corpus/* $(FUZZ_BUILD)/corpus/ 2>/dev/null || true
	@cp $(FUZZ_BUILD)/seed/* $(FUZZ_BUILD)/corpus/

$(FUZZ_BUILD)/%.o: src/%.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link $(if $(filter lf_decode,$*),$(FUZZ_LOAD)) -c $< -o $@

$(FUZZ_BUILD)/codec_fuzz.o: fuzz/codec_fuzz.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/codec_fuzz: $(call FUZZ_OBJS,$(FUZZ_BUILD))
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $@ $^ $(FUZZ_LIBS)

$(FUZZ_BUILD)/loop/%.o: src/%.c
	@mkdir -p $(@D)
	$(CC) $(FUZZ_FLAGS) $(if $(filter lf_decode,$*),$(FUZZ_LOAD)) -c $< -o $@

$(FUZZ_BUILD)/loop/%.o: fuzz/%.c
	@mkdir -p $(@D)
	$(CC) $(FUZZ_FLAGS) -c $< -o $@

$(FUZZ_BUILD)/loop/codec_fuzz_loop: $(call FUZZ_OBJS,$(FUZZ_BUILD)/loop) $(FUZZ_BUILD)/loop/fuzz_main.o
	$(CC) -fsanitize=address,undefined -o $@ $^ $(FUZZ_LIBS)

-include $(wildcard $(FUZZ_BUILD)/*.d $(FUZZ_BUILD)/loop/*.d)
# ==== end of fuzz ===========================================================
