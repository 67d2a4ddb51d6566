// Deliberately wrong CUDA kernels, compiled only into the emulation module, so
// tests/test_cuda_emulator.py can show that each checker catches its bug.
// They are written as our CUDA sources are (csrc/cuda/launch.cuh) and run by
// torch.ops.lenetalex_emu.planted_bug(bug, x): x is a float32 vector of 64
// values, the result a vector of 64 (each kernel's comment says which).
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <string>

#include "cuda/launch.cuh"

namespace lenetalex {
namespace planted {
namespace {

constexpr int kN = 64;

// Correct: y[t] = x[(t + 1) % 64] through a shared tile, with its barrier.
// missing_barrier: the same without it, a race the schedules expose.
template <bool kBarrier>
__global__ void rotate_kernel(const float* x, float* y) {
  LENETALEX_SHARED(float, tile, [kN]);
  const int t = threadIdx.x;
  tile[t] = x[t];
  if (kBarrier) __syncthreads();
  y[t] = tile[(t + 1) % kN];
}

// Half the threads wait at one __syncthreads, half at another.
__global__ void divergent_barrier_kernel(const float* x, float* y) {
  const int t = threadIdx.x;
  if (t < kN / 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  y[t] = x[t];
}

// Thread 0 leaves before the others reach the barrier.
__global__ void barrier_after_exit_kernel(const float* x, float* y) {
  const int t = threadIdx.x;
  if (t == 0) return;
  __syncthreads();
  y[t] = x[t];
}

// Lanes 0-15 shuffle at one line, lanes 16-31 at another, with a full mask.
__global__ void divergent_shuffle_kernel(const float* x, float* y) {
  const int t = threadIdx.x;
  float v = x[t];
  if ((t & 31) < 16) {
    v += __shfl_down_sync(0xffffffffu, v, 1);
  } else {
    v += __shfl_down_sync(0xffffffffu, v, 2);
  }
  y[t] = v;
}

// Lane 31 of each warp leaves; the others shuffle with a mask that names it.
__global__ void shuffle_exited_lane_kernel(const float* x, float* y) {
  const int t = threadIdx.x;
  if ((t & 31) == 31) return;
  y[t] = __shfl_xor_sync(0xffffffffu, x[t], 1);
}

// Launched with 16 threads: the full mask names 16 lanes that do not exist.
__global__ void shuffle_absent_lane_kernel(const float* x, float* y) {
  const int t = threadIdx.x;
  y[t] = __shfl_sync(0xffffffffu, x[t], 0);
}

// Lanes 0-15 wait in a warp shuffle for lanes 16-31, which wait at
// __syncthreads for them.
__global__ void deadlock_kernel(const float* x, float* y) {
  const int t = threadIdx.x;
  float v = x[t];
  if ((t & 31) < 16) v = __shfl_sync(0xffffffffu, v, 0);
  else __syncthreads();
  y[t] = v;
}

// Only the first half of the tile is written; the second half is read.
__global__ void unwritten_tile_kernel(const float* x, float* y) {
  LENETALEX_SHARED(float, tile, [2 * kN]);
  const int t = threadIdx.x;
  tile[t] = x[t];
  __syncthreads();
  y[t] = tile[t + kN];
}

// Off by one: thread 63 reads x[64], one past the tensor (AddressSanitizer).
__global__ void global_overrun_kernel(const float* x, float* y) {
  const int t = threadIdx.x;
  y[t] = x[t + 1];
}

// Off by one in shared memory: thread 63 reads tile[64] (AddressSanitizer:
// the arena's gaps are poisoned).
__global__ void shared_overrun_kernel(const float* x, float* y) {
  LENETALEX_SHARED(float, tile, [kN]);
  const int t = threadIdx.x;
  tile[t] = x[t];
  __syncthreads();
  y[t] = tile[t + 1];
}

// 2 x 32 KiB of static shared memory: past the 48 KiB without opt-in.
__global__ void too_much_shared_kernel(const float* x, float* y) {
  LENETALEX_SHARED(float, a, [8192]);
  LENETALEX_SHARED(float, b, [8192]);
  const int t = threadIdx.x;
  a[t] = x[t];
  b[t] = x[t];
  y[t] = a[t] + b[t];
}

// Declared for 32 threads at most, launched with 64.
__global__ void __launch_bounds__(32) bounded_kernel(const float* x, float* y) {
  y[threadIdx.x] = x[threadIdx.x];
}

at::Tensor planted_bug(c10::string_view bug_view, const at::Tensor& input) {
  TORCH_CHECK_VALUE(input.dim() == 1 && input.size(0) == kN && input.scalar_type() == at::kFloat,
                    "planted_bug: expected input to be a float32 vector of ", kN, " values");
  const std::string bug(bug_view);
  const at::Tensor x = input.contiguous();
  at::Tensor y = at::zeros_like(x);
  const float* xp = x.const_data_ptr<float>();
  float* yp = y.mutable_data_ptr<float>();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const dim3 one(1), threads(kN);
  if (bug == "correct") launch(rotate_kernel<true>, one, threads, 0, stream, xp, yp);
  else if (bug == "missing_barrier") launch(rotate_kernel<false>, one, threads, 0, stream, xp, yp);
  else if (bug == "divergent_barrier")
    launch(divergent_barrier_kernel, one, threads, 0, stream, xp, yp);
  else if (bug == "barrier_after_exit")
    launch(barrier_after_exit_kernel, one, threads, 0, stream, xp, yp);
  else if (bug == "divergent_shuffle")
    launch(divergent_shuffle_kernel, one, threads, 0, stream, xp, yp);
  else if (bug == "shuffle_exited_lane")
    launch(shuffle_exited_lane_kernel, one, threads, 0, stream, xp, yp);
  else if (bug == "shuffle_absent_lane")
    launch(shuffle_absent_lane_kernel, one, 16, 0, stream, xp, yp);
  else if (bug == "deadlock") launch(deadlock_kernel, one, threads, 0, stream, xp, yp);
  else if (bug == "unwritten_tile") launch(unwritten_tile_kernel, one, threads, 0, stream, xp, yp);
  else if (bug == "global_overrun") launch(global_overrun_kernel, one, threads, 0, stream, xp, yp);
  else if (bug == "shared_overrun") launch(shared_overrun_kernel, one, threads, 0, stream, xp, yp);
  else if (bug == "too_much_shared")
    launch(too_much_shared_kernel, one, threads, 0, stream, xp, yp);
  else if (bug == "dynamic_shared_over_limit")
    launch(rotate_kernel<true>, one, threads, 64 * 1024, stream, xp, yp);
  else if (bug == "over_launch_bounds")
    launch_bounded<32>(bounded_kernel, one, threads, 0, stream, xp, yp);
  else if (bug == "block_too_large") launch(rotate_kernel<true>, one, 2048, 0, stream, xp, yp);
  else if (bug == "grid_too_large")
    launch(rotate_kernel<true>, dim3(1, 65536), threads, 0, stream, xp, yp);
  else TORCH_CHECK_VALUE(false, "planted_bug: no planted bug named '", bug, "'");
  return y;
}

}  // namespace
}  // namespace planted

TORCH_LIBRARY_FRAGMENT(lenetalex_emu, m) {
  m.def("planted_bug(str bug, Tensor input) -> Tensor");
}

TORCH_LIBRARY_IMPL(lenetalex_emu, CPU, m) { m.impl("planted_bug", &planted::planted_bug); }

}  // namespace lenetalex
