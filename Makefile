# mergekit-c - one GNU Makefile.
#   make            build ./mergekit-c (and the links ./quantize, ./mergekit-yaml)
#   make test       the whole suite; last line "N passed, N failed"
#   make check      the suite under ASan+UBSan, then again built with OMP=0, then with the
#                   quant kernels built for baseline SSE2 only (MK_NO_CLONES)
#   make demo       synthetic models + recipes/linear.yaml, end to end
#   make bench      benchmarks (time / I/O floor, peak memory)
#   make bench-large  opt-in: 7B-shaped models merged, quantized and packed (~42 GB of disk)
#   make fuzz       libFuzzer targets (clang); FUZZ_TIME=seconds per target
#   make compat     load our outputs in the reference Python libraries (tools venv)
#   make check-report  the report pages in headless Chromium (installs Debian's chromium if missing)
#   make install PREFIX=/usr/local   the program, its links, man pages, bash and zsh completion
#   make uninstall PREFIX=/usr/local removes exactly what install put there (DESTDIR works for both)
# Switches: OMP=0 (no OpenMP), DEBUG=1 (-O0), SAN=1 (ASan+UBSan), V=1 (show commands),
#           WERROR=1 (warnings are errors; CI sets it), MPI=1 (Open MPI: mpirun's ranks
#           write the parts of one output; objects in build-mpi/; docs/cluster.md),
#           CUDA=1 (nvcc: finetune --device cuda, the CUDA kernels of nn/cuda/; objects and
#           test-cuda in build-cuda/; docs/cuda.md).
#   make test-cuda  the CUDA kernels on a GPU against the CPU kernels (skips without a device)

CC ?= cc
PREFIX ?= /usr/local
OMP ?= 1
DEBUG ?= 0
SAN ?= 0
WERROR ?= 0
MPI ?= 0
BUILD ?= build

# lapacke + openblas: LAPACK's SVD (through OpenBLAS) for LoRA extraction and combination
# libcurl: models fetched from the Hugging Face Hub (core/mk_hubfetch.c)
PKGS := libzstd libcjson libxxhash yaml-0.1 lapacke openblas libcurl

# Install missing Debian packages before anything asks pkg-config for flags.
ifeq ($(filter clean,$(MAKECMDGOALS)),)
DEPS_OK := $(shell pkg-config --exists $(PKGS) 2>/dev/null && echo yes)
ifneq ($(DEPS_OK),yes)
DEPS_LOG := $(shell sh tools/install-deps.sh 1>&2; echo $$?)
ifneq ($(DEPS_LOG),0)
$(error missing build dependencies; see the message above)
endif
endif
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# -ffp-contract=off: no fused multiply-add contraction, so results are the same bytes
# with every compiler and CPU (a recipe plus a seed must reproduce exactly).
# -fopenmp-simd: `#pragma omp simd` on elementwise loops vectorises them (same results)
# with or without OpenMP threads. -fno-trapping-math: we never read floating-point
# exception flags, so comparisons and selects may be if-converted (clang's default; the
# values computed do not change).
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -g -Wall -Wextra -Wshadow -Wno-unused-parameter \
               -Wstrict-prototypes -Wmissing-prototypes -Wno-psabi -ffp-contract=off -fno-strict-aliasing -fopenmp-simd \
               -fno-trapping-math
ifeq ($(DEBUG),1)
OPT := -O0
else
# -fvect-cost-model is GCC's; clang rejects it
VECT_COST := $(shell $(CC) -fvect-cost-model=dynamic -E -x c /dev/null >/dev/null 2>&1 && echo -fvect-cost-model=dynamic)
OPT := -O2 -ftree-vectorize $(VECT_COST)
endif
ifeq ($(OMP),1)
OMPFLAGS := -fopenmp
endif
ifeq ($(SAN),1)
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
ifeq ($(WERROR),1)
CFLAGS_BASE += -Werror
endif

# MPI=1: Debian's Open MPI (libopenmpi-dev, openmpi-bin; installed on demand by
# tools/install-deps.sh --mpi). The default build never needs it.
ifeq ($(MPI),1)
ifeq ($(filter clean,$(MAKECMDGOALS)),)
ifneq ($(shell command -v mpicc >/dev/null 2>&1 && command -v mpirun >/dev/null 2>&1 && echo yes),yes)
MPI_LOG := $(shell sh tools/install-deps.sh --mpi 1>&2; echo $$?)
ifneq ($(MPI_LOG),0)
$(error Open MPI is missing; see the message above)
endif
endif
endif
CC := mpicc
ifeq ($(origin BUILD),file)
BUILD := build-mpi
endif
CFLAGS_BASE += -DMK_MPI
endif
# CUDA=1: the CUDA kernels on the device (nn/cuda/kernels.cu, docs/cuda.md) linked into
# ./mergekit-c (finetune --device cuda), objects in build-cuda/. The default build never needs
# nvcc; `make test` compiles and links build/test-cuda when nvcc is found (it skips without a
# GPU). nvcc from PATH or /usr/local/cuda; CUDA_ARCH: the SASS built (PTX too, so newer GPUs
# run it).
NVCC ?= $(shell command -v nvcc 2>/dev/null || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; })
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCH ?= sm_80
ifeq ($(CUDA),1)
ifeq ($(NVCC),)
$(error CUDA=1 needs nvcc (the CUDA toolkit) on PATH or in /usr/local/cuda/bin)
endif
ifeq ($(origin BUILD),file)
BUILD := build-cuda
endif
CFLAGS_BASE += -DMK_CUDA
endif
# ./mergekit-c is relinked whenever the build switches between MPI=1, CUDA=1 and the default
LINK_FLAVOUR := $(shell f=$(if $(filter 1,$(MPI)),mpi,plain)$(if $(filter 1,$(CUDA)),-cuda); mkdir -p build && \
                  { [ "$$(cat build/.flavour 2>/dev/null)" = "$$f" ] || echo $$f >build/.flavour; })

ALL_CFLAGS := $(CFLAGS_BASE) $(OPT) $(OMPFLAGS) $(SANFLAGS) $(PKG_CFLAGS) $(CFLAGS)
ALL_LDFLAGS := $(OMPFLAGS) $(SANFLAGS) $(LDFLAGS)
LIBS := $(PKG_LIBS) -lm -lpthread

ifeq ($(V),1)
Q :=
else
Q := @
endif

LIB_SRC := $(wildcard core/*.c) $(wildcard model/*.c) $(wildcard formats/*.c) $(wildcard merge/*.c) $(wildcard merge/methods/*.c) \
           $(wildcard quant/*.c) $(wildcard lora/*.c) $(wildcard nn/*.c) $(wildcard eval/*.c) \
           $(wildcard train/*.c) nn/cuda/mem.c
CLI_SRC := $(wildcard cli/*.c)
UNIT_SRC := $(wildcard tests/unit/*.c)
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
REPLAY_BIN := $(FUZZ_TARGETS:%=$(BUILD)/fuzz-replay-%)

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/%.o)
UNIT_OBJ := $(UNIT_SRC:%.c=$(BUILD)/%.o)
LIBA := $(BUILD)/libmergekit.a

# the CUDA objects (see CUDA=1 above)
NVCCFLAGS := -O2 -std=c++17 -arch=$(CUDA_ARCH) -Xcompiler -Wall,-Wextra,-Wno-unused-parameter,-fno-strict-aliasing \
             $(if $(filter 1,$(WERROR)),-Werror all-warnings -Xcompiler -Werror)
CUDA_OBJ := $(BUILD)/nn/cuda/kernels.o $(BUILD)/nn/cuda/common.o $(BUILD)/nn/cuda/common16.o $(BUILD)/nn/cuda/train.o
CUDA_OBJ += $(BUILD)/nn/cuda/kernels_lora.o $(BUILD)/nn/cuda/train_lora.o
CUDA_OBJ += $(BUILD)/nn/cuda/kernels_flash.o $(BUILD)/nn/cuda/train_attn.o
CUDA_OBJ += $(BUILD)/nn/cuda/train_lora16.o
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
CUDA_TEST := $(if $(NVCC),$(BUILD)/test-cuda)
# linked into the program with CUDA=1
MAIN_CUDA_OBJ := $(if $(filter 1,$(CUDA)),$(CUDA_OBJ))
MAIN_CUDA_LIBS := $(if $(filter 1,$(CUDA)),$(CUDA_LIBS))

.PHONY: all test test-cuda check demo demo-heal demo-merge-bench bench bench-large bench-methods fuzz compat check-report install install-files uninstall doc clean unit print-lib-src \
        print-pkgs
# keep intermediate objects (fuzz targets), so nothing is printed after the test summary
.SECONDARY:
all: mergekit-c quantize mergekit-yaml
ifeq ($(MPI),1)
# kept beside the default build's binary: the suite's mpirun checks (tests/e2e/cluster.sh) use it
all: $(BUILD)/mergekit-c
endif

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC  $<")
	$(Q)$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

$(LIBA): $(LIB_OBJ)
	@$(if $(Q),echo "  AR  $@")
	$(Q)rm -f $@ && ar rcs $@ $^

mergekit-c: $(CLI_OBJ) $(MAIN_CUDA_OBJ) $(LIBA) build/.flavour
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $(CLI_OBJ) $(MAIN_CUDA_OBJ) $(LIBA) $(LIBS) $(MAIN_CUDA_LIBS)

# `quantize` and `mergekit-yaml` are the same program; argv[0] selects the command.
quantize mergekit-yaml: mergekit-c
	$(Q)ln -sf mergekit-c $@

# the unit tests run the CUDA kernels' bodies on the CPU (nn/cuda/emu.c; docs/cuda.md)
CUDA_EMU_OBJ := $(BUILD)/nn/cuda/emu.o $(BUILD)/nn/cuda/emu16.o $(BUILD)/nn/cuda/common.o $(BUILD)/nn/cuda/common16.o $(BUILD)/nn/cuda/train.o $(BUILD)/tests/cuda/cases.o
CUDA_EMU_OBJ += $(BUILD)/nn/cuda/emu_lora.o $(BUILD)/nn/cuda/train_lora.o $(BUILD)/tests/cuda/cases_lora.o
CUDA_EMU_OBJ += $(BUILD)/nn/cuda/emu_flash.o $(BUILD)/nn/cuda/train_attn.o $(BUILD)/tests/cuda/cases_attn.o
CUDA_EMU_OBJ += $(BUILD)/nn/cuda/emu_lora16.o $(BUILD)/nn/cuda/train_lora16.o $(BUILD)/tests/cuda/cases_lora16.o

ifeq ($(CUDA),1)
all: $(BUILD)/test-cuda
endif

$(BUILD)/nn/cuda/kernels.o: nn/cuda/kernels.cu nn/cuda/bodies.h nn/cuda/launch.h nn/cuda/mk_cuda.h nn/cuda/kernels16.cuh \
                           nn/cuda/bodies16.h nn/cuda/mk_cuda16.h nn/cuda/bodies_norm.h nn/cuda/mk_cuda_norm.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  NVCC $<")
	$(Q)$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/nn/cuda/kernels_lora.o: nn/cuda/kernels_lora.cu nn/cuda/bodies_lora.h nn/cuda/bodies.h nn/cuda/mk_cuda_lora.h nn/cuda/mk_cuda.h \
                                nn/cuda/kernels_lora16.cuh nn/cuda/bodies_lora16.h nn/cuda/mk_cuda_lora16.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  NVCC $<")
	$(Q)$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/nn/cuda/kernels_flash.o: nn/cuda/kernels_flash.cu nn/cuda/bodies_flash.h nn/cuda/bodies.h nn/cuda/mk_cuda_flash.h nn/cuda/mk_cuda_lora.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  NVCC $<")
	$(Q)$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/test-cuda: $(BUILD)/tests/cuda/test_cuda.o $(BUILD)/tests/cuda/cases.o $(BUILD)/tests/cuda/cases_lora.o \
                   $(BUILD)/tests/cuda/cases_attn.o $(BUILD)/tests/cuda/cases_lora16.o $(CUDA_OBJ) $(LIBA)
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS) $(CUDA_LIBS)

test-cuda:
	@[ -n "$(NVCC)" ] || { echo "make test-cuda needs nvcc (the CUDA toolkit) on PATH or in /usr/local/cuda/bin"; exit 2; }
	@$(MAKE) --no-print-directory mergekit-c $(BUILD)/test-cuda
	MK_BIN=$(CURDIR)/mergekit-c $(BUILD)/test-cuda

$(BUILD)/test-unit: $(UNIT_OBJ) $(CUDA_EMU_OBJ) $(LIBA)
	@$(if $(Q),echo "  LD  $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $(UNIT_OBJ) $(CUDA_EMU_OBJ) $(LIBA) $(LIBS)

unit: $(BUILD)/test-unit

# Test helper: stdin is exactly one JSON document (the e2e tests check every --json with it).
$(BUILD)/jsoncheck: $(BUILD)/tests/tools/jsoncheck.o $(LIBA)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

# Test helper: a stand-in for the Hugging Face Hub on the loopback address (tests/e2e/hub_fetch.sh).
$(BUILD)/hubstub: $(BUILD)/tests/tools/hubstub.o $(LIBA)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

# Each fuzz target also links with a plain driver, so the suite replays its corpus.
$(BUILD)/fuzz-replay-%: $(BUILD)/tests/fuzz/fuzz_%.o $(BUILD)/tests/fuzz/replay.o $(LIBA)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

test: all $(BUILD)/test-unit $(REPLAY_BIN) $(BUILD)/jsoncheck $(BUILD)/hubstub $(CUDA_TEST)
	@MK_CUDA_TEST=$(if $(CUDA_TEST),$(CURDIR)/$(CUDA_TEST)) MK_CUDA_BUILD=$(CUDA) MK_BIN=$(CURDIR)/mergekit-c MK_UNIT=$(CURDIR)/$(BUILD)/test-unit MK_REPLAY=$(CURDIR)/$(BUILD) \
	 MK_JSONCHECK=$(CURDIR)/$(BUILD)/jsoncheck MK_HUBSTUB=$(CURDIR)/$(BUILD)/hubstub sh tests/run.sh

# Sanitizers, the no-OpenMP build and the baseline-kernel build each get their own build
# folder and binary. MK_NO_CLONES (quant/qvec.h): the quant fast paths are built once, for
# the baseline (SSE2 on x86-64), instead of also for AVX2 and picked at start; on an AVX2
# machine this is the only way the suite runs the SSE2 builds against the references.
check:
	$(MAKE) --no-print-directory BUILD=build-san SAN=1 DEBUG=0 OMP=1 MK_SUFFIX=-san check-one
	$(MAKE) --no-print-directory BUILD=build-noomp OMP=0 check-one
	$(MAKE) --no-print-directory BUILD=build-noclones CFLAGS="$(CFLAGS) -DMK_NO_CLONES" check-one

check-one: $(BUILD)/mergekit-c $(BUILD)/test-unit $(REPLAY_BIN) $(BUILD)/jsoncheck $(BUILD)/hubstub
	@MK_BIN=$(CURDIR)/$(BUILD)/mergekit-c MK_UNIT=$(CURDIR)/$(BUILD)/test-unit MK_REPLAY=$(CURDIR)/$(BUILD) \
	 MK_JSONCHECK=$(CURDIR)/$(BUILD)/jsoncheck MK_HUBSTUB=$(CURDIR)/$(BUILD)/hubstub \
	 ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	 sh tests/run.sh

$(BUILD)/mergekit-c: $(CLI_OBJ) $(MAIN_CUDA_OBJ) $(LIBA)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $(CLI_OBJ) $(MAIN_CUDA_OBJ) $(LIBA) $(LIBS) $(MAIN_CUDA_LIBS)

demo: all
	sh tools/demo.sh

# SmolLM2-135M depth up-scaled, evaluated, healed by a short finetune, evaluated again (minutes; not in test)
demo-heal: all
	sh tools/demo-heal.sh

demo-merge-bench: all
	sh tools/demo-merge-bench.sh

bench: all
	sh tools/bench.sh

bench-large: all
	sh tools/bench-large.sh

bench-methods: all
	sh tools/bench-methods.sh

fuzz:
	sh tools/fuzz.sh $(FUZZ_TIME)

compat: all
	sh tools/compat.sh

# optional: the default build and `make test` never need chromium (make compat runs it too)
check-report: all
	sh tools/check-report.sh

# Man pages and shell completion, generated by the program from its command and option
# tables (`mergekit-c help --man PAGE`, `help --completion SHELL`), so they can not drift.
# MK_PROG: the binary that generates them and is installed (the test suite passes the one it
# tests, with BUILD and DESTDIR in a scratch folder, to `make install-files`).
MANDIR ?= $(PREFIX)/share/man/man1
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
ALIASES := quantize mergekit-yaml
MK_PROG ?= mergekit-c
MK_RUN = $(abspath $(MK_PROG))

$(BUILD)/man/.stamp: $(MK_PROG)
	@rm -rf $(BUILD)/man && mkdir -p $(BUILD)/man
	@$(if $(Q),echo "  MAN $(BUILD)/man/")
	$(Q)for p in $$($(MK_RUN) help --man-pages); do $(MK_RUN) help --man $$p >$(BUILD)/man/$$p.1 || exit 1; done
	@touch $@

$(BUILD)/completion/mergekit-c.bash: $(MK_PROG)
	@mkdir -p $(dir $@)
	$(Q)$(MK_RUN) help --completion bash >$@

$(BUILD)/completion/_mergekit-c: $(MK_PROG)
	@mkdir -p $(dir $@)
	$(Q)$(MK_RUN) help --completion zsh >$@

doc: $(BUILD)/man/.stamp $(BUILD)/completion/mergekit-c.bash $(BUILD)/completion/_mergekit-c

# Installs the program, its links, a man page per command and bash and zsh completion;
# `make uninstall` (same PREFIX and DESTDIR) removes exactly those files.
install: all
	@$(MAKE) --no-print-directory install-files

install-files: doc
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(MANDIR) $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 755 $(MK_PROG) $(DESTDIR)$(PREFIX)/bin/mergekit-c
	for a in $(ALIASES); do ln -sf mergekit-c $(DESTDIR)$(PREFIX)/bin/$$a || exit 1; done
	install -m 644 $(BUILD)/man/*.1 $(DESTDIR)$(MANDIR)/
	install -m 644 $(BUILD)/completion/mergekit-c.bash $(DESTDIR)$(BASHCOMPDIR)/mergekit-c
	for a in $(ALIASES); do ln -sf mergekit-c $(DESTDIR)$(BASHCOMPDIR)/$$a || exit 1; done
	install -m 644 $(BUILD)/completion/_mergekit-c $(DESTDIR)$(ZSHCOMPDIR)/_mergekit-c

# The page names come from the installed program (or the built one), as install made them.
uninstall:
	@bin=$(DESTDIR)$(PREFIX)/bin/mergekit-c; [ -x "$$bin" ] || bin=./mergekit-c; \
	 pages=$$("$$bin" help --man-pages) || { echo "uninstall: cannot list the man pages (no mergekit-c)"; exit 1; }; \
	 for p in $$pages; do rm -f $(DESTDIR)$(MANDIR)/$$p.1; done
	rm -f $(DESTDIR)$(PREFIX)/bin/mergekit-c $(addprefix $(DESTDIR)$(PREFIX)/bin/,$(ALIASES))
	rm -f $(DESTDIR)$(BASHCOMPDIR)/mergekit-c $(addprefix $(DESTDIR)$(BASHCOMPDIR)/,$(ALIASES))
	rm -f $(DESTDIR)$(ZSHCOMPDIR)/_mergekit-c

# for scripts that build the library their own way (tools/fuzz.sh)
print-lib-src:
	@echo $(LIB_SRC)
print-pkgs:
	@echo $(PKGS)

clean:
	rm -rf build build-san build-noomp build-noclones build-fuzz build-cuda mergekit-c quantize mergekit-yaml

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(UNIT_OBJ:.o=.d) $(CUDA_EMU_OBJ:.o=.d) $(BUILD)/tests/cuda/test_cuda.d $(wildcard $(BUILD)/tests/fuzz/*.d) $(wildcard $(BUILD)/tests/tools/*.d)
