// rbf_distance on CUDA: forward and backward. Never yet run on a GPU: written
// to compile for sm_80 / sm_90 and reviewed by hand.
//
// Forward, y[n, k] = sum_j (x[n, j] - w[k, j])^2, as written (differences, not
// the |x|^2 - 2 x.w + |w|^2 expansion, which cancels): a 64 x 64 output tile per
// block of 16 x 16 threads, each thread a 4 x 4 register block. Tiles of 16
// features of x and w are staged in shared memory (transposed, in the
// accumulation type), so each loaded value serves 64 outputs.
//
// Backward, both grads share one shape (as on the CPU):
//   out[a, b] = 2 sum_c coef(a, c) (P[a, b] - Q[c, b])
//   grad_input:      a = n, c = k, P = x, Q = w, coef = g
//   grad_prototypes: a = k, c = n, P = w, Q = x, coef = g^T
// a 64 (a) x 64 (b) tile per block, P held in registers, tiles of 16 c of coef
// and Q in shared memory. Long reductions over c are split into a fixed number
// of slices (a function of the shape only) whose partial sums go to a float
// workspace and are then added in slice order: deterministic, no atomics.
// Everything accumulates in at::opmath_type (float; double for float64).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "cuda/launch.cuh"
#include "common/ceil_div.h"
#include "common/grads.h"
#include "ops/rbf_distance.h"

namespace lenetalex {
namespace rbf_cuda {
namespace {

constexpr const char* kOp = "rbf_distance";
constexpr int kTile = 64;    // outputs per block along each of its two axes
constexpr int kDepth = 16;   // reduction elements per shared-memory stage
constexpr int kSide = 16;    // threads per block along each axis
constexpr int kThreads = kSide * kSide;
constexpr int kReg = kTile / kSide;  // 4 x 4 outputs per thread
static_assert(kTile * kDepth % kThreads == 0, "tile loads must split evenly over the threads");
constexpr int64_t kGridYZMax = 65535;
constexpr int64_t kGridXMax = std::numeric_limits<int32_t>::max();
// The backward splits its reduction to reach about this many blocks. Fixed, not
// taken from the device, so the summation order (and every bit of the result)
// is the same on any GPU.
constexpr int64_t kTargetBlocks = 512;
constexpr int64_t kMinSlice = 256;  // reduction elements per slice at least

// Thread (ty, tx) owns rows ty + 16 i and columns tx + 16 j of the tile: a warp
// reads 16 consecutive shared-memory columns (no bank conflicts) and writes 16
// consecutive outputs per row. Shared rows are padded by one against conflicts.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                   scalar_t* __restrict__ y, int64_t n, int64_t k, int64_t d) {
  using acc_t = at::opmath_type<scalar_t>;
  LENETALEX_SHARED(acc_t, xs, [kDepth][kTile + 1]);  // xs[j][row]
  LENETALEX_SHARED(acc_t, ws, [kDepth][kTile + 1]);  // ws[j][prototype]
  const int tx = threadIdx.x, ty = threadIdx.y, t = ty * kSide + tx;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t k0 = static_cast<int64_t>(blockIdx.y) * kTile;
  acc_t acc[kReg][kReg];
#pragma unroll
  for (int i = 0; i < kReg; ++i)
#pragma unroll
    for (int jj = 0; jj < kReg; ++jj) acc[i][jj] = acc_t(0);

  for (int64_t j0 = 0; j0 < d; j0 += kDepth) {
    // 64 rows x 16 features of each operand; j fastest, so a warp reads two
    // 64-byte runs of a row-major tensor. Past the edges both operands read 0:
    // padded features add (0 - 0)^2 = 0, padded rows are never stored.
#pragma unroll
    for (int it = 0; it < kTile * kDepth / kThreads; ++it) {
      const int e = t + it * kThreads;
      const int r = e / kDepth, c = e % kDepth;
      const int64_t j = j0 + c, row = n0 + r, proto = k0 + r;
      xs[c][r] = row < n && j < d ? static_cast<acc_t>(x[row * d + j]) : acc_t(0);
      ws[c][r] = proto < k && j < d ? static_cast<acc_t>(w[proto * d + j]) : acc_t(0);
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kDepth; ++c) {
      acc_t a[kReg], b[kReg];
#pragma unroll
      for (int i = 0; i < kReg; ++i) a[i] = xs[c][ty + kSide * i];
#pragma unroll
      for (int jj = 0; jj < kReg; ++jj) b[jj] = ws[c][tx + kSide * jj];
#pragma unroll
      for (int i = 0; i < kReg; ++i)
#pragma unroll
        for (int jj = 0; jj < kReg; ++jj) {
          const acc_t diff = a[i] - b[jj];
          acc[i][jj] += diff * diff;
        }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kReg; ++i) {
    const int64_t row = n0 + ty + kSide * i;
    if (row >= n) continue;
#pragma unroll
    for (int jj = 0; jj < kReg; ++jj) {
      const int64_t proto = k0 + tx + kSide * jj;
      if (proto < k) y[row * k + proto] = static_cast<scalar_t>(acc[i][jj]);
    }
  }
}

// Blocks of grad_kernel per SM that its registers must allow. A thread holds
// 48 accumulation-type values (P, the running sums, the stage's sums): with a
// 4-byte type that plus addressing fits 128 registers, so two 256-thread
// blocks fit an SM's 64K registers (16 warps, 25% occupancy; one block's
// global loads and barriers then overlap the other's arithmetic). Fully
// unrolling the 16-step stage loop let ptxas hoist shared loads until it used
// 159-162 registers (one block, 12.5%); unrolling it by 2 keeps it at 122
// without spills (sm_90). Doubles need 96 registers for those values alone:
// forcing two blocks would spill, so they keep one.
template <typename scalar_t>
constexpr int grad_min_blocks() {
  return sizeof(at::opmath_type<scalar_t>) <= 4 ? 2 : 1;
}

// out[a, b] = -2 sum_c coef(a, c) (Q[c, b] - P[a, b]) over this block's slice
// of c (blockIdx.z). P (A, D) and Q (C, D) are contiguous; coef(a, c) =
// g[a * ga + c * gc]. With one slice the result goes to out; with several, the
// slice's sum (without the -2) goes to partial[slice][a][b].
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads, grad_min_blocks<scalar_t>())
    grad_kernel(const scalar_t* __restrict__ p, const scalar_t* __restrict__ q,
                const scalar_t* __restrict__ g, int64_t A, int64_t C, int64_t D, int64_t ga,
                int64_t gc, int64_t slice_len, scalar_t* __restrict__ out,
                at::opmath_type<scalar_t>* __restrict__ partial) {
  using acc_t = at::opmath_type<scalar_t>;
  LENETALEX_SHARED(acc_t, gs, [kDepth][kTile + 1]);  // gs[c][a]
  LENETALEX_SHARED(acc_t, qs, [kDepth][kTile + 1]);  // qs[c][b]
  const int tx = threadIdx.x, ty = threadIdx.y, t = ty * kSide + tx;
  const int64_t a0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t b0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t c_lo = static_cast<int64_t>(blockIdx.z) * slice_len;
  const int64_t c_hi = c_lo + slice_len < C ? c_lo + slice_len : C;
  const bool coef_a_fast = ga == 1;  // grad_prototypes reads g^T: walk along a

  acc_t pv[kReg][kReg], acc[kReg][kReg];
#pragma unroll
  for (int i = 0; i < kReg; ++i)
#pragma unroll
    for (int jj = 0; jj < kReg; ++jj) {
      const int64_t a = a0 + ty + kSide * i, b = b0 + tx + kSide * jj;
      pv[i][jj] = a < A && b < D ? static_cast<acc_t>(p[a * D + b]) : acc_t(0);
      acc[i][jj] = acc_t(0);
    }

  for (int64_t c0 = c_lo; c0 < c_hi; c0 += kDepth) {
    // Past the edges coef reads 0, so padded c add nothing.
#pragma unroll
    for (int it = 0; it < kTile * kDepth / kThreads; ++it) {
      const int e = t + it * kThreads;
      const int r = coef_a_fast ? e % kTile : e / kDepth;
      const int c = coef_a_fast ? e / kTile : e % kDepth;
      const int64_t a = a0 + r, cc = c0 + c;
      gs[c][r] = a < A && cc < c_hi ? static_cast<acc_t>(g[a * ga + cc * gc]) : acc_t(0);
      const int rb = e % kTile, cb = e / kTile;  // Q rows are contiguous along b
      const int64_t b = b0 + rb, cq = c0 + cb;
      qs[cb][rb] = b < D && cq < c_hi ? static_cast<acc_t>(q[cq * D + b]) : acc_t(0);
    }
    __syncthreads();
    // Each stage's 16 terms are summed apart, then added: shorter float chains.
    acc_t part[kReg][kReg];
#pragma unroll
    for (int i = 0; i < kReg; ++i)
#pragma unroll
      for (int jj = 0; jj < kReg; ++jj) part[i][jj] = acc_t(0);
#pragma unroll 2  // not 16: see grad_min_blocks
    for (int c = 0; c < kDepth; ++c) {
      acc_t coef[kReg], qv[kReg];
#pragma unroll
      for (int i = 0; i < kReg; ++i) coef[i] = gs[c][ty + kSide * i];
#pragma unroll
      for (int jj = 0; jj < kReg; ++jj) qv[jj] = qs[c][tx + kSide * jj];
#pragma unroll
      for (int i = 0; i < kReg; ++i)
#pragma unroll
        for (int jj = 0; jj < kReg; ++jj) part[i][jj] += coef[i] * (qv[jj] - pv[i][jj]);
    }
#pragma unroll
    for (int i = 0; i < kReg; ++i)
#pragma unroll
      for (int jj = 0; jj < kReg; ++jj) acc[i][jj] += part[i][jj];
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < kReg; ++i) {
    const int64_t a = a0 + ty + kSide * i;
    if (a >= A) continue;
#pragma unroll
    for (int jj = 0; jj < kReg; ++jj) {
      const int64_t b = b0 + tx + kSide * jj;
      if (b >= D) continue;
      if (partial == nullptr) out[a * D + b] = static_cast<scalar_t>(acc_t(-2) * acc[i][jj]);
      else partial[(static_cast<int64_t>(blockIdx.z) * A + a) * D + b] = acc[i][jj];
    }
  }
}

// out[i] = -2 sum over slices of partial[slice][i], in slice order.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    sum_slices_kernel(const at::opmath_type<scalar_t>* __restrict__ partial, int64_t slices,
                      int64_t numel, scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < numel; i += stride) {
    acc_t s = 0;
    for (int64_t sl = 0; sl < slices; ++sl) s += partial[sl * numel + i];
    out[i] = static_cast<scalar_t>(acc_t(-2) * s);
  }
}

// One grad: out (A, D) from P (A, D), Q (C, D), coef strides (ga, gc); C >= 1.
template <typename scalar_t>
void launch_grad(const at::Tensor& p, const at::Tensor& q, const at::Tensor& g, int64_t A,
                 int64_t C, int64_t D, int64_t ga, int64_t gc, at::Tensor& out,
                 cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t a_tiles = ceil_div(A, kTile), b_tiles = ceil_div(D, kTile);
  TORCH_CHECK_VALUE(a_tiles <= kGridXMax && b_tiles <= kGridYZMax, kOp,
                    "_backward: sizes too large for the CUDA grid (", A, " x ", D, ")");
  int64_t slices = std::min(ceil_div(kTargetBlocks, a_tiles * b_tiles), ceil_div(C, kMinSlice));
  slices = std::clamp<int64_t>(slices, 1, kGridYZMax);
  const int64_t slice_len = ceil_div(ceil_div(C, slices), kDepth) * kDepth;
  slices = ceil_div(C, slice_len);
  at::Tensor partial;
  if (slices > 1)
    partial = at::empty({slices, A, D}, out.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  const dim3 grid(static_cast<unsigned>(a_tiles), static_cast<unsigned>(b_tiles),
                  static_cast<unsigned>(slices));
  launch_bounded<kThreads>(grad_kernel<scalar_t>, grid, dim3(kSide, kSide), 0, stream,
      p.const_data_ptr<scalar_t>(), q.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), A,
      C, D, ga, gc, slice_len, out.mutable_data_ptr<scalar_t>(),
      slices > 1 ? partial.mutable_data_ptr<acc_t>() : nullptr);
  if (slices > 1) {
    const int64_t numel = A * D;
    const int64_t blocks = std::min<int64_t>(ceil_div(numel, kThreads), 65535);
    launch_bounded<kThreads>(sum_slices_kernel<scalar_t>, static_cast<unsigned>(blocks), kThreads,
                             0, stream,
        partial.const_data_ptr<acc_t>(), slices, numel, out.mutable_data_ptr<scalar_t>());
  }
}

at::Tensor rbf_distance_cuda(const at::Tensor& input, const at::Tensor& prototypes) {
  const RBFShape s = check_rbf_distance(input, prototypes, Backend::Cuda);
  c10::cuda::CUDAGuard guard(input.device());
  at::Tensor y = at::empty({s.n, s.k}, input.options());
  if (y.numel() == 0) return y;
  if (s.d == 0) return y.zero_();
  const int64_t n_tiles = ceil_div(s.n, kTile), k_tiles = ceil_div(s.k, kTile);
  TORCH_CHECK_VALUE(n_tiles <= kGridXMax && k_tiles <= kGridYZMax, kOp,
                    ": sizes too large for the CUDA grid (", s.n, " x ", s.k, ")");
  const at::Tensor x = input.contiguous(), w = prototypes.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(k_tiles));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "rbf_distance_cuda", [&] {
    launch_bounded<kThreads>(forward_kernel<scalar_t>, grid, dim3(kSide, kSide), 0, stream,
        x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
        s.n, s.k, s.d);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> rbf_distance_backward_cuda(const at::Tensor& grad_output,
                                                              const at::Tensor& input,
                                                              const at::Tensor& prototypes,
                                                              std::array<bool, 2> output_mask) {
  const RBFShape s = check_rbf_distance_backward(grad_output, input, prototypes, Backend::Cuda);
  c10::cuda::CUDAGuard guard(input.device());
  const auto opts = input.options();
  at::Tensor gx = grad_or_empty(output_mask[0], {s.n, s.d}, opts);
  at::Tensor gw = grad_or_empty(output_mask[1], {s.k, s.d}, opts);
  // An empty sum is zero: no prototypes (for grad_input) or no rows (for grad_prototypes).
  if (output_mask[0] && s.k == 0) gx.zero_();
  if (output_mask[1] && s.n == 0) gw.zero_();
  const bool want_x = output_mask[0] && gx.numel() > 0 && s.k > 0;
  const bool want_w = output_mask[1] && gw.numel() > 0 && s.n > 0;
  if (!want_x && !want_w) return {gx, gw};
  const at::Tensor x = input.contiguous(), w = prototypes.contiguous();
  const at::Tensor g = grad_output.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "rbf_distance_backward_cuda", [&] {
    if (want_x)  // out[n] = 2 sum_k g[n, k] (x[n] - w[k])
      launch_grad<scalar_t>(x, w, g, s.n, s.k, s.d, s.k, 1, gx, stream);
    if (want_w)  // out[k] = 2 sum_n g[n, k] (w[k] - x[n])
      launch_grad<scalar_t>(w, x, g, s.k, s.n, s.d, 1, s.k, gw, stream);
  });
  return {gx, gw};
}

}  // namespace
}  // namespace rbf_cuda

TORCH_LIBRARY_IMPL(LENETALEX_NS, LENETALEX_CUDA_KEY, m) {
  m.impl("rbf_distance", &rbf_cuda::rbf_distance_cuda);
  m.impl("rbf_distance_backward", &rbf_cuda::rbf_distance_backward_cuda);
}

}  // namespace lenetalex
