// What a translation unit is compiled for. The CUDA sources (csrc/cuda) build
// twice: with nvcc for GPUs, and with the host compiler into the emulation
// module lenetalex._emu (csrc/cuda_emu, LENETALEX_CUDA_EMU defined), whose
// kernels run on the CPU. Code that differs between host and device asks
// LENETALEX_DEVICE_CODE, never __CUDA_ARCH__ alone, so the emulator runs the
// device branch.
#pragma once

#if defined(__CUDA_ARCH__) || defined(LENETALEX_CUDA_EMU)
#define LENETALEX_DEVICE_CODE 1
#else
#define LENETALEX_DEVICE_CODE 0
#endif

// The torch.ops namespace the schemas (csrc/ops/*.cpp) and the CUDA entries
// register in: lenetalex, or lenetalex_emu in the emulation module, where the
// CUDA entries are the CPU kernels. Both take their schemas from the same text.
#if defined(LENETALEX_CUDA_EMU)
#define LENETALEX_NS lenetalex_emu
#define LENETALEX_CUDA_KEY CPU
#else
#define LENETALEX_NS lenetalex
#define LENETALEX_CUDA_KEY CUDA
#endif
