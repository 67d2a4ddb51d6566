// The CUDA emulator's controls, for the module (module.cpp) and the runtime.
#pragma once

#include <cstdint>

#include "cuda_emu/cuda_emu.h"

namespace cuda_emu {

// The order in which a block's scheduler runs its ready fibers, each time it
// runs them (LENETALEX_EMU_SCHEDULE). A race-free kernel gives bit-identical
// results under all three.
enum class Schedule : int { Forward = 0, Reverse = 1, Random = 2 };

void set_schedule(Schedule s, uint64_t seed);
Schedule schedule(uint64_t* seed = nullptr);

}  // namespace cuda_emu
