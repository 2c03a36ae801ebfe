# mtrace build.
#
#   make            build/libmtalloc.so, build/libmtalloc.a, build/libmtrace.so, build/mtrace-run
#   make test       install missing dependencies (apt, as root), build, run every test
#   make bench      benchmarks against glibc and the other allocators and profilers
#   make demo       record the sample program and show its reports
#   make install    into $(PREFIX) (default /usr/local)
#
# Objects go under build/obj/<variant>/ so the interposer can be built twice (plain
# allocator, allocator + tracer) from the same sources.

CC      ?= gcc
ifeq ($(origin CC),default)
CC      := gcc
endif
PREFIX  ?= /usr/local
BUILD   := build
OBJ     := $(BUILD)/obj

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-missing-field-initializers
OPT     ?= -O2
CFLAGS_BASE := -std=c11 $(OPT) -g $(WARN) -D_GNU_SOURCE -pthread -fPIC -fvisibility=hidden \
               -fno-strict-aliasing -Iinclude
# The allocator and interposer must not let GCC turn malloc+memset into calloc (or similar)
# inside the very functions that implement them: that would recurse.
CFLAGS_ALLOC := $(CFLAGS_BASE) -ftls-model=initial-exec -fno-builtin-malloc -fno-builtin-calloc \
                -fno-builtin-realloc -fno-builtin-free -fno-stack-protector -fno-plt \
                -ffunction-sections
CFLAGS_HOST  := $(CFLAGS_BASE)

COMMON_SRC    := $(wildcard common/*.c)
ALLOC_SRC     := $(wildcard allocator/*.c)
INTERPOSE_SRC := $(wildcard interpose/*.c)
TRACE_SRC     := $(wildcard trace/*.c)
COLLECT_SRC   := $(wildcard trace/collector/*.c)
RUN_SRC       := $(wildcard tools/mtrace_run/*.c)

# Link order is code layout: the code every process runs (start-up, the small and medium
# paths, the exported entry points) first, so it shares the first 64 KiB of text, and the
# cold code (debug layer, statistics, checks, reports, and libgcc's unwinder, linked last)
# after it. (In libmtalloc.so the functions every process runs are moved out of the text
# into segments of their own by interpose/resident.ld; this order still keeps the medium
# paths together for the programs that use them.) The kernel maps file pages 64 KiB at a time around each fault ("fault-around"),
# so code that is never run stays out of the resident set only if it does not share those
# 64 KiB with code that is.
HOT_SRC     := interpose/exports.c interpose/slow.c allocator/alloc.c allocator/heap.c allocator/page.c \
               allocator/segment.c allocator/segmap.c allocator/size_class.c allocator/harden.c \
               allocator/tunables.c allocator/error.c common/options.c common/platform.c common/lock.c \
               common/log.c common/format.c interpose/public.c allocator/medium.c \
               allocator/medium_bins.c allocator/large.c interpose/error_report.c interpose/fault.c
ALLOC_ORDER := $(filter $(COMMON_SRC) $(ALLOC_SRC) $(INTERPOSE_SRC),$(HOT_SRC)) \
               $(filter-out $(HOT_SRC),$(COMMON_SRC) $(ALLOC_SRC) $(INTERPOSE_SRC))
ALLOC_OBJ   := $(patsubst %.c,$(OBJ)/alloc/%.o,$(ALLOC_ORDER))
TRACE_OBJ   := $(patsubst %.c,$(OBJ)/alloc/%.o,$(COMMON_SRC) $(ALLOC_SRC)) \
               $(patsubst %.c,$(OBJ)/trace/%.o,$(INTERPOSE_SRC) $(TRACE_SRC))
# The allocator without its always-on integrity checks, for measuring what they cost.
NOHARD_OBJ  := $(patsubst %.c,$(OBJ)/nohard/%.o,$(ALLOC_ORDER))
# The collector names heap errors with the allocator's own tables (allocator/error.c).
# It converts the traced processes' TSC timestamps with trace/clock.c.
RUN_OBJ     := $(patsubst %.c,$(OBJ)/host/%.o,$(COMMON_SRC) allocator/error.c trace/clock.c $(COLLECT_SRC) $(RUN_SRC))

# The allocator's error reports unwind with libgcc's unwinder, linked in statically
# (-static-libgcc) so that libmtalloc.so needs nothing but libc (interpose/error_report.c).
LIBS_ALLOC  := -ldl -static-libgcc
# No DT_FINI for libmtalloc.so: crti's _fini is empty on x86-64 (destructors run from
# .fini_array), and it sits at the very end of the text, among the cold code, so calling it
# at exit faulted in the cold code around it (up to 52 KiB). Naming a function that does
# not exist leaves DT_FINI unset.
SO_NO_FINI  := -Wl,-fini=mt_no_fini_function
# Likewise no DT_INIT: crti's _init (a test for __gmon_start__) is the first code of the
# text, among the cold code, and ld.so calls it at load; constructors run from .init_array.
SO_NO_INIT  := -Wl,-init=mt_no_init_function
# The code every process runs and the read-only data it reads in segments of their own, so
# that fault-around maps nothing else with them (interpose/resident.ld); relative
# relocations packed (DT_RELR: binutils 2.38, glibc 2.36 at run time), which takes the
# ELF headers ld.so reads at load from three pages to two.
SO_LAYOUT   := $(SO_NO_FINI) $(SO_NO_INIT) -Wl,-T,interpose/resident.ld -Wl,-z,pack-relative-relocs
LIBS_TRACE  := -lunwind -ldl -static-libgcc
LIBS_RUN    := -lsqlite3 -ldw -lelf -lz -lpthread -ldl -lm

DEPS_STAMP  := $(BUILD)/.deps-ok

TARGETS := $(BUILD)/libmtalloc.so $(BUILD)/libmtalloc.a
ifneq ($(wildcard trace/*.c),)
TARGETS += $(BUILD)/libmtrace.so
endif
ifneq ($(RUN_SRC),)
TARGETS += $(BUILD)/mtrace-run
endif

.PHONY: all deps test test-build test-c test-py bench demo install clean help FORCE
all: $(DEPS_STAMP) $(TARGETS)

help:
	@sed -n '3,9p' Makefile

# Dependencies: checked once per build tree, installed with apt when run as root.
$(DEPS_STAMP): tools/deps.sh
	@tools/deps.sh build
	@mkdir -p $(BUILD) && touch $@

deps:
	@tools/deps.sh all

# The compiler flags of this build tree, rewritten only when they change (an edit of this
# Makefile, OPT=... on the command line): every object depends on it, so a change of flags
# rebuilds them instead of linking objects built the old way.
FLAGS_STAMP := $(OBJ)/flags
FLAGS_NOW   := $(CC) | $(CFLAGS_ALLOC) | $(CFLAGS_HOST)
FORCE:
$(FLAGS_STAMP): FORCE
	@mkdir -p $(OBJ)
	@echo '$(FLAGS_NOW)' | cmp -s - $@ || echo '$(FLAGS_NOW)' > $@

$(OBJ)/alloc/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@$(CC) $(CFLAGS_ALLOC) -MMD -MP -c $< -o $@

# Frame pointers: the recorder finds the program's call site by walking its own frames
# (trace/unwind.h, the unwind cache's key).
$(OBJ)/trace/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@$(CC) $(CFLAGS_ALLOC) -fno-omit-frame-pointer -DMT_TRACING -MMD -MP -c $< -o $@

$(OBJ)/nohard/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@$(CC) $(CFLAGS_ALLOC) -DMT_NO_HARDENING -MMD -MP -c $< -o $@

$(OBJ)/host/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@$(CC) $(CFLAGS_HOST) -MMD -MP -c $< -o $@

$(BUILD)/exports.map: interpose/exports.map.in interpose/hooks.h
	@mkdir -p $(BUILD)
	@$(CC) -E -P -x c -Iinterpose $< -o $@

# libmtrace.so also exports the tracing-only hooks (MT_TRACE_HOOKS).
$(BUILD)/exports-trace.map: interpose/exports.map.in interpose/hooks.h
	@mkdir -p $(BUILD)
	@$(CC) -E -P -x c -DMT_TRACING -Iinterpose $< -o $@

$(BUILD)/libmtalloc.so: $(ALLOC_OBJ) $(BUILD)/exports.map interpose/resident.ld
	@$(CC) -shared -o $@ $(ALLOC_OBJ) $(LIBS_ALLOC) $(SO_LAYOUT) -pthread -Wl,--version-script=$(BUILD)/exports.map -Wl,-z,now -Wl,-soname,libmtalloc.so

$(BUILD)/libmtalloc-nohard.so: $(NOHARD_OBJ) $(BUILD)/exports.map interpose/resident.ld
	@$(CC) -shared -o $@ $(NOHARD_OBJ) $(LIBS_ALLOC) $(SO_LAYOUT) -pthread -Wl,--version-script=$(BUILD)/exports.map -Wl,-z,now

$(BUILD)/libmtalloc.a: $(ALLOC_OBJ)
	@rm -f $@
	@ar rcs $@ $(ALLOC_OBJ)

$(BUILD)/libmtrace.so: $(TRACE_OBJ) $(BUILD)/exports-trace.map
	@$(CC) -shared -o $@ $(TRACE_OBJ) $(LIBS_TRACE) -pthread -Wl,--version-script=$(BUILD)/exports-trace.map -Wl,-z,now -Wl,-soname,libmtrace.so

$(BUILD)/mtrace-run: $(RUN_OBJ)
	@$(CC) -o $@ $(RUN_OBJ) $(LIBS_RUN)

-include $(shell find $(OBJ) -name '*.d' 2>/dev/null)

# ---- tests -------------------------------------------------------------------------------
# tests/c/test_*.c: one program each, linked statically with the allocator (the program's
# malloc is ours) unless its first line says `// link: <objects or flags>`; run by
# tests/run-c-tests.sh. tests/progs/*.c: programs that run under LD_PRELOAD in the Python
# integration tests (built here, run there).
C_TESTS    := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(wildcard tests/c/test_*.c))
TEST_PROGS := $(patsubst tests/progs/%.c,$(BUILD)/progs/%,$(wildcard tests/progs/*.c))
TEST_PROGS_CXX := $(patsubst tests/progs/%.cc,$(BUILD)/progs/%,$(wildcard tests/progs/*.cc))
# tests/attacks/*.c: classic heap attacks, run under each allocator by tests/py/test_attacks.py
# and tools/attack-table.py. Built without the allocator: they pick one with LD_PRELOAD.
ATTACKS    := $(patsubst tests/attacks/%.c,$(BUILD)/attacks/%,$(wildcard tests/attacks/*.c))

# A test depends on the sources its `// link:` line names and on every header (one program
# compiles several sources, so gcc's -MMD cannot list them): a change rebuilds it.
TEST_HEADERS := $(wildcard include/*.h common/*.h allocator/*.h interpose/*.h trace/*.h trace/collector/*.h)
test_link_sources = $(filter %.c,$(shell sed -n '1s|^// link: ||p' $(1)))
.SECONDEXPANSION:
$(BUILD)/tests/%: tests/c/%.c tests/c/check.h $(BUILD)/libmtalloc.a $(TEST_HEADERS) \
                  $$(call test_link_sources,tests/c/$$*.c)
	@mkdir -p $(dir $@)
	@$(CC) $(CFLAGS_HOST) -fno-builtin-malloc -fno-builtin-free -Itests/c -o $@ $< \
	  $$(sed -n '1s|^// link: ||p' $<) $(BUILD)/libmtalloc.a $(LIBS_ALLOC) -lm

# -MMD: some include the wire format (trace/wire.h), which a rebuild must not leave stale.
$(BUILD)/progs/%: tests/progs/%.c
	@mkdir -p $(dir $@) $(OBJ)/progs
	@$(CC) -std=gnu11 -O1 -g -fno-omit-frame-pointer -fno-builtin-malloc -fno-builtin-free -Wall -Iinclude -pthread \
	  -MMD -MP -MF $(OBJ)/progs/$*.d -MT $@ -o $@ $< \
	  $$(sed -n '1s|^// link: ||p' $<)

$(BUILD)/attacks/%: tests/attacks/%.c tests/attacks/attack.h
	@mkdir -p $(dir $@)
	@$(CC) -std=gnu11 -O1 -g -fno-builtin-malloc -fno-builtin-free -fno-builtin-realloc -Wall -Werror -pthread -o $@ $<

$(BUILD)/progs/%: tests/progs/%.cc
	@mkdir -p $(dir $@)
	@g++ -std=c++17 -O1 -g -Wall -Iinclude -pthread -o $@ $<

# Dependencies first (apt must not run twice at once under -j), then build, then run.
test:
	@tools/deps.sh test
	@$(MAKE) -s --no-print-directory all test-build
	@tests/run-c-tests.sh $(C_TESTS)
	@$(MAKE) --no-print-directory test-py

# The library without checks too: tests check what it links against (test_footprint.py).
test-build: all $(BUILD)/libmtalloc-nohard.so $(C_TESTS) $(TEST_PROGS) $(TEST_PROGS_CXX) $(ATTACKS)

test-c: all $(C_TESTS)
	@tests/run-c-tests.sh $(C_TESTS)

test-py: all $(BUILD)/libmtalloc-nohard.so $(TEST_PROGS) $(TEST_PROGS_CXX) $(ATTACKS)
	@PY=$$(tools/find-python.sh --need pytest) || exit 1; \
	  cd tests && MTRACE_BUILD=$(CURDIR)/$(BUILD) $$PY -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) py

# ---- benchmarks, demo, install ------------------------------------------------------------
bench: all $(BUILD)/libmtalloc-nohard.so
	@tools/deps.sh bench
	@$(MAKE) --no-print-directory -C bench BUILD=$(CURDIR)/$(BUILD)

# The demo's HTML report draws charts: it needs the test dependencies (matplotlib) too.
demo:
	@tools/deps.sh test
	@$(MAKE) -s --no-print-directory all
	@tools/demo.sh $(BUILD)

install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PREFIX)/lib/mtrace
	install -m 755 $(BUILD)/libmtalloc.so $(DESTDIR)$(PREFIX)/lib/
	install -m 644 $(BUILD)/libmtalloc.a $(DESTDIR)$(PREFIX)/lib/
	install -m 644 include/mtrace.h $(DESTDIR)$(PREFIX)/include/
	@if [ -f $(BUILD)/libmtrace.so ]; then install -m 755 $(BUILD)/libmtrace.so $(DESTDIR)$(PREFIX)/lib/; fi
	@if [ -f $(BUILD)/mtrace-run ]; then install -m 755 $(BUILD)/mtrace-run $(DESTDIR)$(PREFIX)/bin/; fi
	@if [ -d tools/mtrace_report ]; then \
	  cp -r tools/mtrace_report $(DESTDIR)$(PREFIX)/lib/mtrace/ && \
	  install -m 755 tools/find-python.sh $(DESTDIR)$(PREFIX)/lib/mtrace/ && \
	  sed 's|^MTRACE_PYDIR=.*|MTRACE_PYDIR=$(PREFIX)/lib/mtrace|' tools/mtrace-report > $(DESTDIR)$(PREFIX)/bin/mtrace-report && \
	  chmod 755 $(DESTDIR)$(PREFIX)/bin/mtrace-report; fi

clean:
	rm -rf $(BUILD)
