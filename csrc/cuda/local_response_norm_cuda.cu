// local_response_norm on CUDA: forward and backward.
//
// The input is viewed as (N, C, L). One thread walks one column (one image n,
// one position p, or V consecutive positions) over a chunk of channels: at
// each channel step the threads of a warp read consecutive positions of one
// channel row, so every load and store is coalesced, and DRAM sees each tensor
// once (chunk halos come from L2).
//
// Two kinds of kernels:
//   - fixed window (size 3 or 5: AlexNet's is 5) with numel < 2^31: the window
//     size is a template parameter, indices are 32-bit, and each thread keeps
//     the window's x (and in the backward t and dy * p) in registers, summing
//     each window directly in the accumulation type (float; double for
//     float64). A direct sum of S non-negative squares (or of S t's) has no
//     cancellation: its error is within S roundings of the sum, and inf/nan
//     spoil only the windows that hold them, as in the reference. Where L is a
//     multiple of 4 and the tensors are aligned, a thread takes 4 consecutive
//     positions with one vector load per channel (AlexNet's L = 55^2, 27^2,
//     13^2 are odd: scalar there).
//   - general (any size, 64-bit indices): the sliding-window walk of
//     local_response_norm_column.cuh, sums in double, restarted every
//     lrn_period(size) = max(32, size) channels; channel chunks of that
//     period. Backward: each thread keeps t and dy * p of its last R =
//     min(size + 1, C) channels in a ring in shared memory (its own column of
//     the block's array: no synchronisation, no bank conflicts). When that
//     does not fit (R beyond 192 float slots per thread), the ring lives in a
//     global scratch tensor instead (2 R N L values, at most twice the input
//     in the accumulation type) and each thread walks all channels.
//
// Roofline, H100 SXM (3.35 TB/s), (128, 96, 55, 55) float32, estimates:
// forward reads x and writes y, 297 MB: 89 us; backward reads x, dy and
// writes dx, 446 MB: 133 us. The general kernels spend per channel 64-bit
// `%` (ring slot, restart test: ~40 instructions each), double adds at half
// the FP32 rate and float<->double conversions (a quarter-rate pipe), so they
// are issue-bound at about 2x (forward) and 3-4x (backward) the floor.
// The fixed-window kernels do per channel and position: 1 load (2 in the
// backward), S FMAs for the sum, the power (sqrt, sqrt, div for beta 0.75),
// 1 store, a few register moves and no integer division: ~20-30 instructions
// per element for 8-12 bytes, under the ~80 instructions per 8 bytes the GPU can
// issue at DRAM speed (4 warp-instr/clk x 32 lanes x 1.98 GHz x 132 SMs per
// 3.35 TB/s: ~10 per byte; bfloat16's 4 bytes per element leave ~40, closer:
// bench/results/gpu-roofline-estimate.md), so memory-bound: estimate 90-110 us
// forward, 140-170 us backward in float32, not measured.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "cuda/launch.cuh"
#include "cuda/local_response_norm_column.cuh"
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

// ---------------------------------------------------------------------------
// Fixed-window kernels: window size S, V positions per thread, int indices.

// V consecutive values, loaded and stored as one access.
template <typename T, int V>
struct alignas(sizeof(T) * V) LrnVec {
  T v[V];
};

template <int V, typename scalar_t>
__device__ __forceinline__ LrnVec<scalar_t, V> load_vec(const scalar_t* p) {
  return *reinterpret_cast<const LrnVec<scalar_t, V>*>(p);
}

// Thread idx -> first element of its column at channel 0, and its chunk.
// Positions fastest (a warp takes consecutive vectors of one row).
struct SmallColumn {
  int base, chunk;
};
template <int V>
__device__ __forceinline__ SmallColumn small_column(int idx, int vl, int nchunks, int c, int l) {
  const int rest = idx / vl, vpos = idx - rest * vl;
  const int n = rest / nchunks, chunk = rest - n * nchunks;
  return {n * c * l + vpos * V, chunk};
}

// Loads channel ch of the column into xv (zeros outside [0, C)).
template <int V, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_channel(const scalar_t* col, int ch, int c, int l,
                                             acc_t (&out)[V]) {
  if (ch >= 0 && ch < c) {
    const LrnVec<scalar_t, V> w = load_vec<V>(col + ch * l);
#pragma unroll
    for (int v = 0; v < V; ++v) out[v] = static_cast<acc_t>(w.v[v]);
  } else {
#pragma unroll
    for (int v = 0; v < V; ++v) out[v] = acc_t(0);
  }
}

// s = k + alpha_n * (sum of the S squares in xv), per position.
template <int S, int V, typename acc_t>
__device__ __forceinline__ acc_t window_scale(const acc_t (&xv)[S][V], int v, acc_t alpha_n,
                                              acc_t k) {
  acc_t sum = 0;
#pragma unroll
  for (int i = 0; i < S; ++i) sum += xv[i][v] * xv[i][v];
  return k + alpha_n * sum;
}

// Grid-strides over N * (L / V) * nchunks threads; output channels [c0, c1).
template <int S, int V, typename scalar_t, typename acc_t>
__global__ void small_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                     int n_img, int c, int l, int chunk, int nchunks,
                                     LrnCoef<acc_t> p) {
  constexpr int before = S / 2, after = (S - 1) / 2;
  const acc_t alpha_n = static_cast<acc_t>(p.alpha_n), k = static_cast<acc_t>(p.k);
  const int vl = l / V;
  const int total = n_img * nchunks * vl;  // < 2^31 (host)
  for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += gridDim.x * blockDim.x) {
    const SmallColumn col = small_column<V>(idx, vl, nchunks, c, l);
    const scalar_t* xc = x + col.base;
    scalar_t* yc = y + col.base;
    const int c0 = col.chunk * chunk, c1 = min(c0 + chunk, c);
    acc_t xv[S][V];  // channels ch - before .. ch + after
#pragma unroll
    for (int i = 1; i < S; ++i) load_channel<V>(xc, c0 - before - 1 + i, c, l, xv[i]);
    for (int ch = c0; ch < c1; ++ch) {
#pragma unroll
      for (int i = 0; i + 1 < S; ++i)
#pragma unroll
        for (int v = 0; v < V; ++v) xv[i][v] = xv[i + 1][v];
      load_channel<V>(xc, ch + after, c, l, xv[S - 1]);
      LrnVec<scalar_t, V> out;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        const acc_t sc = window_scale<S, V>(xv, v, alpha_n, k);
        out.v[v] = static_cast<scalar_t>(xv[before][v] * lrn_inv_pow(sc, p));
      }
      *reinterpret_cast<LrnVec<scalar_t, V>*>(yc + ch * l) = out;
    }
  }
}

// dx_j = dy_j p_j - grad * x_j * (sum of t over [j - after, j + before]),
// t_e = dy_e p_e x_e / s_e. Walks e over [j0 - after, j1 - 1 + before]; at
// each e it knows t_e, so it emits dx_j for j = e - before. Registers hold x
// over e's window, t over [e - S + 1, e] and dy * p over [e - before, e].
template <int S, int V, typename scalar_t, typename acc_t>
__global__ void small_backward_kernel(const scalar_t* __restrict__ gy,
                                      const scalar_t* __restrict__ x, scalar_t* __restrict__ gx,
                                      int n_img, int c, int l, int chunk, int nchunks,
                                      LrnCoef<acc_t> p) {
  constexpr int before = S / 2, after = (S - 1) / 2;
  const acc_t alpha_n = static_cast<acc_t>(p.alpha_n), k = static_cast<acc_t>(p.k);
  const int vl = l / V;
  const int total = n_img * nchunks * vl;  // < 2^31 (host)
  for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total;
       idx += gridDim.x * blockDim.x) {
    const SmallColumn col = small_column<V>(idx, vl, nchunks, c, l);
    const scalar_t* xc = x + col.base;
    const scalar_t* gyc = gy + col.base;
    scalar_t* gxc = gx + col.base;
    const int j0 = col.chunk * chunk, j1 = min(j0 + chunk, c);
    const int e0 = j0 - after, e1 = j1 - 1 + before;
    acc_t xv[S][V];           // x over [e - before, e + after]
    acc_t tq[S][V];           // t over [e - S + 1, e]
    acc_t dq[before + 1][V];  // dy * p over [e - before, e]
#pragma unroll
    for (int i = 1; i < S; ++i) load_channel<V>(xc, e0 - before - 1 + i, c, l, xv[i]);
#pragma unroll
    for (int v = 0; v < V; ++v) {
#pragma unroll
      for (int i = 0; i < S; ++i) tq[i][v] = acc_t(0);
#pragma unroll
      for (int i = 0; i <= before; ++i) dq[i][v] = acc_t(0);
    }
    for (int e = e0; e <= e1; ++e) {
#pragma unroll
      for (int v = 0; v < V; ++v) {
#pragma unroll
        for (int i = 0; i + 1 < S; ++i) xv[i][v] = xv[i + 1][v], tq[i][v] = tq[i + 1][v];
#pragma unroll
        for (int i = 0; i < before; ++i) dq[i][v] = dq[i + 1][v];
      }
      load_channel<V>(xc, e + after, c, l, xv[S - 1]);
      acc_t dy[V];
      load_channel<V>(gyc, e, c, l, dy);  // 0 outside [0, C): t_e = dy * p = 0 there
#pragma unroll
      for (int v = 0; v < V; ++v) {
        const acc_t sc = window_scale<S, V>(xv, v, alpha_n, k);
        const acc_t dyp = dy[v] * lrn_inv_pow(sc, p);
        const bool inside = e >= 0 && e < c;  // s outside is k: its power must not reach t
        tq[S - 1][v] = inside ? dyp * xv[before][v] / sc : acc_t(0);
        dq[before][v] = inside ? dyp : acc_t(0);
      }
      const int j = e - before;
      if (j < j0) continue;
      // x_j = x_{e - before} is xv[0].
      LrnVec<scalar_t, V> out;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        acc_t tsum = 0;
#pragma unroll
        for (int i = 0; i < S; ++i) tsum += tq[i][v];
        out.v[v] = static_cast<scalar_t>(dq[0][v] - p.grad * xv[0][v] * tsum);
      }
      *reinterpret_cast<LrnVec<scalar_t, V>*>(gxc + j * l) = out;
    }
  }
}

// The fixed-window plan: which S and V, the channel chunks, the grid; or
// false for the general kernels.
struct SmallPlan {
  int s, v, chunk, nchunks;
  int64_t blocks;
};
// Threads the fixed-window kernels aim at before splitting channels into
// chunks (about 8 per H100 SM lane group: 132 SMs x 1024); a function of the
// shape only.
constexpr int64_t kSmallTargetThreads = 128 * 1024;
constexpr int64_t kSmallMinChunk = 32;  // channels per chunk at least: halo S - 1 of them

bool plan_small(const LrnShape& s, std::initializer_list<const void*> ptrs, size_t elem,
                SmallPlan& plan) {
  if (s.size != 3 && s.size != 5) return false;
  // int indices; the grid-stride step (up to kMaxBlocks * kThreads) must not
  // overflow the index either.
  if (s.n * s.c * s.l > INT_MAX - kMaxBlocks * kThreads) return false;
  bool aligned = s.l % 4 == 0;
  for (const void* q : ptrs) aligned = aligned && reinterpret_cast<uintptr_t>(q) % (4 * elem) == 0;
  plan.s = int(s.size);
  plan.v = aligned ? 4 : 1;
  const int64_t columns = s.n * (s.l / plan.v);
  int64_t nchunks = (kSmallTargetThreads + columns - 1) / columns;
  nchunks = std::clamp<int64_t>(nchunks, 1, (s.c + kSmallMinChunk - 1) / kSmallMinChunk);
  const int64_t chunk = (s.c + nchunks - 1) / nchunks;
  plan.chunk = int(chunk);
  plan.nchunks = int((s.c + chunk - 1) / chunk);
  plan.blocks = blocks_for(columns * plan.nchunks, kThreads);
  return true;
}

template <typename scalar_t, typename acc_t, typename F>
void with_small_kernel(const SmallPlan& plan, F f) {
  if (plan.s == 3 && plan.v == 4) f(std::integral_constant<int, 3>(), std::integral_constant<int, 4>());
  else if (plan.s == 3) f(std::integral_constant<int, 3>(), std::integral_constant<int, 1>());
  else if (plan.v == 4) f(std::integral_constant<int, 5>(), std::integral_constant<int, 4>());
  else f(std::integral_constant<int, 5>(), std::integral_constant<int, 1>());
}

// ---------------------------------------------------------------------------
// General kernels' host side.

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
    SmallPlan plan;
    if (plan_small(s, {x.const_data_ptr(), y.const_data_ptr()}, sizeof(scalar_t), plan)) {
      with_small_kernel<scalar_t, acc_t>(plan, [&](auto S, auto V) {
        launch(small_forward_kernel<decltype(S)::value, decltype(V)::value, scalar_t, acc_t>,
            plan.blocks, kThreads, 0, stream, x.const_data_ptr<scalar_t>(),
            y.mutable_data_ptr<scalar_t>(), int(s.n), int(s.c), int(s.l), plan.chunk,
            plan.nchunks, lrn_coef<acc_t>(size, alpha, beta, k));
      });
      return;
    }
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
    SmallPlan plan;
    if (plan_small(s, {gy.const_data_ptr(), x.const_data_ptr(), gx.const_data_ptr()},
                   sizeof(scalar_t), plan)) {
      with_small_kernel<scalar_t, acc_t>(plan, [&](auto S, auto V) {
        launch(small_backward_kernel<decltype(S)::value, decltype(V)::value, scalar_t, acc_t>,
            plan.blocks, kThreads, 0, stream, gy.const_data_ptr<scalar_t>(),
            x.const_data_ptr<scalar_t>(), gx.mutable_data_ptr<scalar_t>(), int(s.n), int(s.c),
            int(s.l), plan.chunk, plan.nchunks, lrn_coef<acc_t>(size, alpha, beta, k));
      });
      return;
    }
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
