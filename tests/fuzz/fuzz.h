/* fuzz.h - every fuzz target defines LLVMFuzzerTestOneInput; built with libFuzzer by
 * tools/fuzz.sh (make fuzz), and with replay.c into a plain binary that `make test` runs
 * over the committed corpus (tests/fuzz/corpus/<target>/). A target must never crash,
 * leak, exit or write files, whatever the bytes. */
#ifndef MK_FUZZ_H
#define MK_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
