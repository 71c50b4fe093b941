/* fuzz: what every fuzz target in tests/fuzz exports. The same object links
 * either with libFuzzer (make fuzz, clang) or with replay.c, the standalone
 * driver that feeds each corpus file once (ctest fuzz/replay_<target>). */
#ifndef NCGHL_FUZZ_H
#define NCGHL_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Called once before the first input. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
/* One input; returns 0. A crash, sanitizer report or abort() is a finding. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
