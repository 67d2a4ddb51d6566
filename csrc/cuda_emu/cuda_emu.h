// The CUDA emulator's device API: what csrc/cuda/*.cu and *.cuh see in place of
// the CUDA runtime when they are compiled by the host compiler into the
// emulation module lenetalex._emu (LENETALEX_CUDA_EMU defined).
//
// A launch runs every block of the grid on the CPU, blocks in parallel over
// LENETALEX_EMU_THREADS OS threads; each CUDA thread of a block is a fiber
// (fiber.h) that runs until it reaches __syncthreads, a warp operation or its
// end, then yields to the block's scheduler (runtime.cpp). The scheduler runs
// the fibers in the order LENETALEX_EMU_SCHEDULE names (forward, reverse,
// random), releases barriers and warp operations when every thread they name
// has arrived, and turns every misuse it sees into an error that the launch
// throws (a Python RuntimeError): see README "CUDA emulator".
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#include <math.h>

#include <c10/core/Device.h>

// Qualifiers: kernels are ordinary host functions here.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __align__(n) alignas(n)
// Read by the launch helper instead (see launch_bounded in cuda/launch.cuh).
#define __launch_bounds__(...)

namespace cuda_emu {

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The block being run by this OS thread and the fiber (CUDA thread) now running.
struct BlockContext {
  uint3 block_idx;
  dim3 block_dim, grid_dim;
};
struct ThreadContext {
  uint3 thread_idx;
};
// Set by the scheduler before it switches to a fiber. The default TLS model
// of a shared object (global-dynamic): initial-exec would not load, since
// torch uses up the static TLS space.
extern thread_local const BlockContext* tl_block;
extern thread_local const ThreadContext* tl_thread;

// Where a kernel called the emulator, for its error messages.
struct Site {
  const char* file;
  int line;
  const char* function;
};

void syncthreads(Site site);
void syncwarp(Site site, unsigned mask);

enum class ShuffleKind { Index, Up, Down, Xor };
// One lane's part of a shuffle: its value in, the value of its source lane out
// (8 bytes hold any shuffled type).
uint64_t shuffle(Site site, ShuffleKind kind, unsigned mask, uint64_t value, int arg, int width);

template <typename T>
T shuffle_as(Site site, ShuffleKind kind, unsigned mask, T value, int arg, int width) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable<T>::value,
                "shuffled values are at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = shuffle(site, kind, mask, bits, arg, width);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// Shared memory: the block's arena, filled with 0xFF bytes (NaN in every float
// type) when the block starts, so a read of a value no thread wrote shows.
// key: one per declaration and template instantiation (a function-local static).
void* static_shared(const void* key, size_t bytes, size_t align, Site site, const char* name);
void* dynamic_shared(Site site);

// Host side of a launch: checks the configuration (the CUDA limits, 48 KiB of
// shared memory without opt-in, the kernel's launch bound if given) and runs
// every block; throws c10::Error naming the launch site on any error.
struct Launch {
  dim3 grid, block;
  size_t dynamic_smem;
  unsigned max_threads;  // the kernel's __launch_bounds__, or 0
  Site site;
};
void run_grid(const Launch& launch, const std::function<void()>& thread_body);

// Stubs of the CUDA stream and device guard: the emulator has one stream and
// no device; both exist so the entries compile unchanged.
struct Stream {};
using cudaStream_t = Stream*;

}  // namespace cuda_emu

using cuda_emu::cudaStream_t;
using cuda_emu::dim3;
using cuda_emu::uint3;

namespace c10 {
namespace cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};
struct CUDAStream {
  operator cuda_emu::cudaStream_t() const { return nullptr; }
};
inline CUDAStream getCurrentCUDAStream() { return {}; }
}  // namespace cuda
}  // namespace c10

#define threadIdx (::cuda_emu::tl_thread->thread_idx)
#define blockIdx (::cuda_emu::tl_block->block_idx)
#define blockDim (::cuda_emu::tl_block->block_dim)
#define gridDim (::cuda_emu::tl_block->grid_dim)

#define LENETALEX_EMU_SITE \
  (::cuda_emu::Site{__FILE__, __LINE__, __PRETTY_FUNCTION__})
#define __syncthreads() ::cuda_emu::syncthreads(LENETALEX_EMU_SITE)
#define __syncwarp(...) ::cuda_emu::syncwarp(LENETALEX_EMU_SITE, ::cuda_emu::warp_mask(__VA_ARGS__))
#define LENETALEX_EMU_SHFL(kind, mask, var, ...)                                          \
  ::cuda_emu::shuffle_as(LENETALEX_EMU_SITE, ::cuda_emu::ShuffleKind::kind, (mask), (var), \
                         ::cuda_emu::lane_arg(__VA_ARGS__), ::cuda_emu::warp_width(__VA_ARGS__))
#define __shfl_sync(mask, var, ...) LENETALEX_EMU_SHFL(Index, mask, var, __VA_ARGS__)
#define __shfl_up_sync(mask, var, ...) LENETALEX_EMU_SHFL(Up, mask, var, __VA_ARGS__)
#define __shfl_down_sync(mask, var, ...) LENETALEX_EMU_SHFL(Down, mask, var, __VA_ARGS__)
#define __shfl_xor_sync(mask, var, ...) LENETALEX_EMU_SHFL(Xor, mask, var, __VA_ARGS__)

namespace cuda_emu {
// The optional last arguments: __syncwarp's mask, a shuffle's width.
constexpr unsigned warp_mask(unsigned mask = 0xffffffffu) { return mask; }
constexpr int lane_arg(int arg, int /*width*/ = 32) { return arg; }
constexpr int warp_width(int /*arg*/, int width = 32) { return width; }
}  // namespace cuda_emu

// CUDA's device min/max, which kernels call unqualified on ints and floats.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
