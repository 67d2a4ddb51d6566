// What every CUDA source includes in place of the CUDA runtime headers, so
// that it compiles for two targets unchanged (csrc/common/targets.h):
//   - nvcc, for GPUs: the c10 CUDA stream, guard and launch check;
//   - the host compiler, into the emulation module (LENETALEX_CUDA_EMU): the
//     emulator's device API (csrc/cuda_emu/cuda_emu.h), whose kernels run on
//     the CPU under its checkers.
// Kernels are launched with launch() (or launch_bounded() for a kernel with
// __launch_bounds__), never with <<<>>>, and declare shared memory with
// LENETALEX_SHARED / LENETALEX_DYNAMIC_SHARED, one declarator each.
#pragma once

#include <cstddef>
#include <utility>

#include <c10/util/Exception.h>

#include "common/targets.h"

#if defined(LENETALEX_CUDA_EMU)
#include "cuda_emu/cuda_emu.h"
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#if defined(LENETALEX_CUDA_EMU)
// A per-block region of the emulator's arena, the same for every thread of
// the block; the key is a static local of a lambda, one per declaration and
// template instantiation.
#define LENETALEX_SHARED(type, name, dims)                                                  \
  type(&name) dims = *reinterpret_cast<type(*) dims>(::cuda_emu::static_shared(            \
      [] {                                                                                \
        static const char key = 0;                                                        \
        return static_cast<const void*>(&key);                                            \
      }(),                                                                                \
      sizeof(type dims), alignof(type), LENETALEX_EMU_SITE, #name))
#define LENETALEX_DYNAMIC_SHARED(type, name, align) \
  type* name = reinterpret_cast<type*>(::cuda_emu::dynamic_shared(LENETALEX_EMU_SITE))
#else
#define LENETALEX_SHARED(type, name, dims) __shared__ type name dims
// A typed extern array would clash between template instantiations: raw bytes, cast.
#define LENETALEX_DYNAMIC_SHARED(type, name, align) extern __shared__ __align__(align) type name[]
#endif

namespace lenetalex {

#if defined(LENETALEX_CUDA_EMU)
// The grid argument, which also records where launch() was called (the
// default arguments are evaluated at the call), for the emulator's messages.
struct GridAt {
  dim3 grid;
  const char* file;
  int line;
  GridAt(dim3 g, const char* f = __builtin_FILE(), int l = __builtin_LINE())
      : grid(g), file(f), line(l) {}
  template <typename I, typename = std::enable_if_t<std::is_integral<I>::value>>
  GridAt(I g, const char* f = __builtin_FILE(), int l = __builtin_LINE())
      : grid(static_cast<unsigned>(g)), file(f), line(l) {}
};

template <typename... Params, typename... Args>
void launch_with_bound(unsigned max_threads, void (*kernel)(Params...), GridAt grid, dim3 block,
                       size_t smem, cudaStream_t, Args&&... args) {
  // Converted once to the parameter types, as a launch does; every thread
  // then gets its own copy, as each CUDA thread has its own parameters.
  const std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  const cuda_emu::Launch l{grid.grid, block, smem, max_threads, {grid.file, grid.line, "launch"}};
  cuda_emu::run_grid(l, [&] { std::apply([&](auto... p) { kernel(p...); }, params); });
}

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), GridAt grid, dim3 block, size_t smem, cudaStream_t stream,
            Args&&... args) {
  launch_with_bound(0, kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}

// For a kernel declared __launch_bounds__(kMaxThreads): the emulator checks
// the block against it (on a GPU the launch would fail instead).
template <unsigned kMaxThreads, typename... Params, typename... Args>
void launch_bounded(void (*kernel)(Params...), GridAt grid, dim3 block, size_t smem,
                    cudaStream_t stream, Args&&... args) {
  launch_with_bound(kMaxThreads, kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}
#else
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
            Args&&... args) {
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// For a kernel declared __launch_bounds__(kMaxThreads): a larger block would
// fail to launch ("too many resources requested"); said here, with the numbers.
template <unsigned kMaxThreads, typename... Params, typename... Args>
void launch_bounded(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                    cudaStream_t stream, Args&&... args) {
  TORCH_CHECK(block.x * block.y * block.z <= kMaxThreads, "CUDA launch: block of ",
              block.x * block.y * block.z, " threads exceeds the kernel's __launch_bounds__(",
              kMaxThreads, ")");
  launch(kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}
#endif

}  // namespace lenetalex
