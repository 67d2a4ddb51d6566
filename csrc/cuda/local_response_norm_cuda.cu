// local_response_norm on CUDA: forward and backward.
//
// The input is viewed as (N, C, L). One thread walks one column (one image n,
// one position p) over a chunk of channels with the sliding window of
// ops/local_response_norm.h (lrn_forward_column / lrn_backward_column): at each
// channel step the threads of a warp read 32 consecutive positions of one
// channel row, so every load and store is coalesced. The squares entering and
// leaving the window were read a few steps earlier by the same thread and come
// from L1/L2; DRAM sees each tensor once.
//
// Channel chunks of lrn_period(size) = max(32, size) channels per thread give
// the GPU enough threads for small batches and restart the window sums; a
// chunk re-reads a halo of size - 1 channels (from cache).
//
// Backward: each thread keeps t and dy * p of its last R = min(size + 1, C)
// channels in a ring in shared memory (its own column of the block's array:
// no synchronisation, no bank conflicts). When that does not fit (R beyond 192
// float slots per thread), the ring lives in a global scratch tensor instead
// (2 R N L values, at most twice the input in the accumulation type) and each
// thread walks all channels (one chunk; the window sums still restart every
// lrn_period channels).
//
// Accumulation: window sums in double, the rest in at::opmath_type (float for
// float32/float16/bfloat16, double for float64).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>

#include "cuda/launch.cuh"
#include "ops/local_response_norm.h"

namespace lenetalex {
namespace lrn_cuda {
namespace {

constexpr int kThreads = 256;
// Grid-stride loops past this many blocks (about 4 waves of a full H100).
constexpr int64_t kMaxBlocks = 4096;
constexpr int64_t kMaxSharedBytes = 48 * 1024;  // no opt-in needed on any architecture

int64_t blocks_for(int64_t threads_total, int threads) {
  return std::min((threads_total + threads - 1) / threads, kMaxBlocks);
}

// Thread idx -> (image, channel chunk, position); positions fastest, so a warp
// reads consecutive addresses of one channel row.
struct Column {
  int64_t n, chunk, pos;
};
__device__ inline Column column_of(int64_t idx, const LrnShape& s, int64_t nchunks) {
  const int64_t rest = idx / s.l;
  return {rest / nchunks, rest % nchunks, idx % s.l};
}

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                               LrnShape s, int64_t chunk, int64_t nchunks, LrnCoef<acc_t> p) {
  const int64_t total = s.n * nchunks * s.l;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const Column col = column_of(idx, s, nchunks);
    const int64_t base = col.n * s.c * s.l + col.pos;
    const int64_t c0 = col.chunk * chunk;
    lrn_forward_column<scalar_t, acc_t>(x + base, y + base, s.l, s, c0,
                                        lrn_min(c0 + chunk, s.c), p);
  }
}

// ring == nullptr: the ring is in dynamic shared memory, R slots of t then R of
// dy * p, each slot blockDim.x wide. Otherwise ring is the global scratch: R
// slots of t then R of dy * p, each slot N * L wide, indexed by column n L + p
// (nchunks is 1 then).
template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(const scalar_t* __restrict__ gy, const scalar_t* __restrict__ x,
                                scalar_t* __restrict__ gx, LrnShape s, int64_t chunk,
                                int64_t nchunks, LrnCoef<acc_t> p, int64_t R, acc_t* ring) {
  LENETALEX_DYNAMIC_SHARED(unsigned char, smem, sizeof(double));
  const int64_t total = s.n * nchunks * s.l;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const Column col = column_of(idx, s, nchunks);
    const int64_t base = col.n * s.c * s.l + col.pos;
    acc_t *ring_t, *ring_p;
    int64_t ring_stride;
    if (ring == nullptr) {
      ring_stride = blockDim.x;
      ring_t = reinterpret_cast<acc_t*>(smem) + threadIdx.x;
    } else {
      ring_stride = s.n * s.l;
      ring_t = ring + col.n * s.l + col.pos;
    }
    ring_p = ring_t + R * ring_stride;
    const int64_t j0 = col.chunk * chunk;
    lrn_backward_column<scalar_t, acc_t>(gy + base, x + base, gx + base, s.l, s, j0,
                                         lrn_min(j0 + chunk, s.c), p, ring_t, ring_p, R,
                                         ring_stride);
  }
}

// Channels per chunk of a column: chunks start at multiples of the restart
// period; one chunk when the period passes C (min: no overflow in the chunk
// count for a size near 2^63).
int64_t chunk_channels(const LrnShape& s) { return std::min(lrn_period(s.size), s.c); }

at::Tensor local_response_norm_cuda(const at::Tensor& input, int64_t size, double alpha,
                                    double beta, double k) {
  const LrnShape s = check_local_response_norm(input, size, Backend::Cuda);
  c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous();
  at::Tensor y = at::empty(input.sizes(), input.options());
  if (y.numel() == 0) return y;
  const int64_t chunk = chunk_channels(s);
  const int64_t nchunks = (s.c + chunk - 1) / chunk;
  const int64_t blocks = blocks_for(s.n * nchunks * s.l, kThreads);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "local_response_norm_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch(forward_kernel<scalar_t, acc_t>, blocks, kThreads, 0, stream,
        x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), s, chunk, nchunks,
        lrn_coef<acc_t>(size, alpha, beta, k));
  });
  return y;
}

at::Tensor local_response_norm_backward_cuda(const at::Tensor& grad_output,
                                             const at::Tensor& input, int64_t size, double alpha,
                                             double beta, double k) {
  const LrnShape s = check_local_response_norm_backward(grad_output, input, size, Backend::Cuda);
  c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor gy = grad_output.contiguous(), x = input.contiguous();
  at::Tensor gx = at::empty(input.sizes(), input.options());
  if (gx.numel() == 0) return gx;
  const int64_t R = lrn_ring_slots(s);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "local_response_norm_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t per_thread = 2 * R * int64_t(sizeof(acc_t));
    int threads = kThreads;
    while (threads > 32 && threads * per_thread > kMaxSharedBytes) threads /= 2;
    const bool shared = threads * per_thread <= kMaxSharedBytes;
    if (!shared) threads = kThreads;
    // The global-ring fallback walks every channel in one chunk (its ring is
    // indexed by column only).
    const int64_t chunk = shared ? chunk_channels(s) : s.c;
    const int64_t nchunks = (s.c + chunk - 1) / chunk;
    at::Tensor scratch;
    if (!shared) {
      scratch = at::empty({2 * R * s.n * s.l},
                          input.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    }
    const int64_t blocks = blocks_for(s.n * nchunks * s.l, threads);
    const size_t smem_bytes = shared ? size_t(threads * per_thread) : 0;
    launch(backward_kernel<scalar_t, acc_t>, blocks, threads, smem_bytes, stream,
        gy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
        gx.mutable_data_ptr<scalar_t>(), s, chunk, nchunks,
        lrn_coef<acc_t>(size, alpha, beta, k), R,
        shared ? nullptr : scratch.mutable_data_ptr<acc_t>());
  });
  return gx;
}

}  // namespace
}  // namespace lrn_cuda

TORCH_LIBRARY_IMPL(LENETALEX_NS, LENETALEX_CUDA_KEY, m) {
  m.impl("local_response_norm", &lrn_cuda::local_response_norm_cuda);
  m.impl("local_response_norm_backward", &lrn_cuda::local_response_norm_backward_cuda);
}

}  // namespace lenetalex
