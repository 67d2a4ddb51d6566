// conv2d_activation on CUDA: the tiled implicit-GEMM kernel shared by the
// forward, grad_input and grad_weight (see problems.cuh).
//
// C[M x N] = A[M x K] * B[K x N] per group, where A and B are never formed in
// memory: a Problem gathers their elements on the fly from the tensors and
// stores C's elements with its own epilogue (bias + activation, a plain store,
// or a split-K partial sum). One block computes a BM x BN tile of C over the
// K range [split * k_chunk, (split + 1) * k_chunk):
//   grid.x = M tiles, grid.y = N tiles * splits, grid.z = groups.
// Tiles: BN = 64, 32 or 16 with BM = 4096 / BN (64 x 64, 128 x 32, 256 x 16),
// so every shape keeps 256 threads with 4 x 4 accumulators each; the host
// picks the one that pads C least (LeNet's backward has N = 1..16 output or
// input channels, which a 64-wide tile would mostly waste). Thread (tx, ty) =
// (tid % TX, tid / TX), TX = BM / 4, owns the 4 x 4 elements
// C[m0 + tx + TX i][n0 + ty + TY j] (TY = BN / 4) in registers, so that a
// warp's stores hit consecutive m (consecutive output pixels) and its
// shared-memory reads are conflict-free (As: consecutive words; Bs: one or
// two broadcast words).
// Per K step of kBK, the block stages As[kBK][BM] and Bs[kBK][BN] in shared
// memory (in acc_t, converted once on load):
//   A: thread loads m = m0 + tid % BM (fixed for the whole loop, so its row
//      context, e.g. the output pixel's image and input origin, is worked out
//      once) at k = k0 + tid / BM + (256 / BM) p, p = 0..BM/16-1;
//   B: thread loads k = k0 + tid % 16 at n = n0 + tid / 16 + 16 p,
//      p = 0..BN/16-1 (column contexts fixed for the loop).
// Each C element sums its K range in the same order whatever the tile, so the
// tile choice never changes a result's bits; only split-K does (a function of
// the shape alone).
// Out-of-range m, n, k load zeros, so partial tiles need no special case;
// stores are guarded. The tensor-core twin for half types: igemm_mma.cuh.
// Double buffering comes later.
#pragma once

#include <cstdint>

#include "common/ceil_div.h"
#include "cuda/launch.cuh"

namespace lenetalex {
namespace conv_cuda {

constexpr int kBK = 16;
constexpr int kThreads = 256;
constexpr int kTM = 4;  // C rows per thread
constexpr int kTN = 4;  // C columns per thread
constexpr int kTileArea = kThreads * kTM * kTN;  // BM * BN

// The tile BM x BN for BN in {16, 32, 64}.
template <int BN>
struct Tile {
  static constexpr int kN = BN;
  static constexpr int kM = kTileArea / BN;
  static constexpr int kTX = kM / kTM;                   // threads along m
  static constexpr int kTY = BN / kTN;                   // threads along n
  static constexpr int kAPasses = kBK * kM / kThreads;   // A loads per thread per K step
  static constexpr int kBPasses = kBK * BN / kThreads;   // B loads per thread per K step
  // Bs rows padded by 2 words: the B loads (16 k x 2 n per warp) then fall in
  // 32 distinct banks (row stride 18, 34 or 66 words: 2k mod 32 distinct).
  static constexpr int kNPad = BN + 2;
  static_assert(kTX * kTY == kThreads && kM <= kThreads && kThreads % kM == 0,
                "thread layout must cover the tile");
  static_assert(kAPasses * kThreads == kBK * kM && kBPasses * kThreads == kBK * BN,
                "load passes must cover the tiles exactly");
};

// Problem interface (all __device__, const):
//   using acc_t;
//   ARow a_row(g, m);            acc_t load_a(const ARow&, k);
//   BCol b_col(g, n);            acc_t load_b(const BCol&, k);
//   CRow c_row(g, m);            void store(const CRow&, g, split, n, acc_t);
// The kernel only calls them with 0 <= m < M, 0 <= n < N, k in the block's range.
template <typename Problem, int BN>
__global__ void __launch_bounds__(kThreads)
    igemm_kernel(const Problem p, int64_t M, int64_t N, int64_t K, int64_t k_chunk,
                 int64_t n_tiles) {
  using acc_t = typename Problem::acc_t;
  using T = Tile<BN>;
  LENETALEX_SHARED(acc_t, As, [kBK][T::kM]);
  LENETALEX_SHARED(acc_t, Bs, [kBK][T::kNPad]);

  const int tid = threadIdx.x;
  const int tx = tid % T::kTX, ty = tid / T::kTX;
  const int64_t g = blockIdx.z;
  const int64_t m0 = int64_t(blockIdx.x) * T::kM;
  const int64_t n0 = (int64_t(blockIdx.y) % n_tiles) * BN;
  const int64_t split = int64_t(blockIdx.y) / n_tiles;
  const int64_t k_begin = split * k_chunk;
  const int64_t k_end = K < k_begin + k_chunk ? K : k_begin + k_chunk;

  // This thread's A row and B columns for the loads.
  constexpr int kAStep = kThreads / T::kM;  // k rows per A pass
  const int a_m = tid % T::kM, a_k = tid / T::kM;
  const bool a_ok = m0 + a_m < M;
  typename Problem::ARow arow{};
  if (a_ok) arow = p.a_row(g, m0 + a_m);
  const int b_k = tid % kBK, b_n = tid / kBK;
  typename Problem::BCol bcol[T::kBPasses];
  bool b_ok[T::kBPasses];
#pragma unroll
  for (int q = 0; q < T::kBPasses; ++q) {
    const int64_t n = n0 + b_n + q * (kThreads / kBK);
    b_ok[q] = n < N;
    bcol[q] = {};
    if (b_ok[q]) bcol[q] = p.b_col(g, n);
  }

  acc_t acc[kTM][kTN];
#pragma unroll
  for (int i = 0; i < kTM; ++i)
#pragma unroll
    for (int j = 0; j < kTN; ++j) acc[i][j] = acc_t(0);

  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK) {
#pragma unroll
    for (int q = 0; q < T::kAPasses; ++q) {
      const int kl = a_k + q * kAStep;
      const int64_t k = k0 + kl;
      As[kl][a_m] = (a_ok && k < k_end) ? p.load_a(arow, k) : acc_t(0);
    }
#pragma unroll
    for (int q = 0; q < T::kBPasses; ++q) {
      const int nl = b_n + q * (kThreads / kBK);
      const int64_t k = k0 + b_k;
      Bs[b_k][nl] = (b_ok[q] && k < k_end) ? p.load_b(bcol[q], k) : acc_t(0);
    }
    __syncthreads();  // tiles complete before anyone reads them
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      acc_t a[kTM], b[kTN];
#pragma unroll
      for (int i = 0; i < kTM; ++i) a[i] = As[kk][tx + T::kTX * i];
#pragma unroll
      for (int j = 0; j < kTN; ++j) b[j] = Bs[kk][ty + T::kTY * j];
#pragma unroll
      for (int i = 0; i < kTM; ++i)
#pragma unroll
        for (int j = 0; j < kTN; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();  // everyone done reading before the next loads overwrite
  }

  // Epilogue: the Problem's store (bias + activation, or a plain/partial store).
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const int64_t m = m0 + tx + T::kTX * i;
    if (m >= M) continue;
    const typename Problem::CRow crow = p.c_row(g, m);
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const int64_t n = n0 + ty + T::kTY * j;
      if (n < N) p.store(crow, g, split, n, acc[i][j]);
    }
  }
}

}  // namespace conv_cuda
}  // namespace lenetalex
