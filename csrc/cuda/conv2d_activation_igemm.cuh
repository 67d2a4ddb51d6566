// conv2d_activation on CUDA: the tiled implicit-GEMM kernel shared by the
// forward, grad_input and grad_weight (see conv2d_activation_problems.cuh).
//
// C[M x N] = A[M x K] * B[K x N] per group, where A and B are never formed in
// memory: a Problem gathers their elements on the fly from the tensors and
// stores C's elements with its own epilogue (bias + activation, a plain store,
// or a split-K partial sum). One block computes a kBM x kBN tile of C over the
// K range [split * k_chunk, (split + 1) * k_chunk):
//   grid.x = M tiles, grid.y = N tiles * splits, grid.z = groups.
// 256 threads; thread (tx, ty) = (tid % 16, tid / 16) owns the 4 x 4 elements
// C[m0 + tx + 16 i][n0 + ty + 16 j] in registers, so that a warp's stores hit
// 16 consecutive m (consecutive output pixels) and its shared-memory reads are
// conflict-free (As: 16 consecutive words; Bs: 2 broadcast words).
// Per K step of kBK, the block stages As[kBK][kBM] and Bs[kBK][kBN] in shared
// memory (in acc_t, converted once on load):
//   A: thread loads m = m0 + tid % 64 (fixed for the whole loop, so its row
//      context, e.g. the output pixel's image and input origin, is worked out
//      once) at k = k0 + tid / 64 + 4 p, p = 0..3;
//   B: thread loads k = k0 + tid % 16 at n = n0 + tid / 16 + 16 p, p = 0..3
//      (four column contexts, fixed for the loop).
// Out-of-range m, n, k load zeros, so partial tiles need no special case;
// stores are guarded. Tensor cores and double buffering come later.
#pragma once

#include <cstdint>

#include "cuda/launch.cuh"

namespace lenetalex {
namespace conv_cuda {

constexpr int kBM = 64;
constexpr int kBN = 64;
constexpr int kBK = 16;
constexpr int kThreads = 256;
constexpr int kTM = 4;  // C rows per thread, strided by 16
constexpr int kTN = 4;  // C columns per thread, strided by 16
constexpr int kAPasses = kBK / (kThreads / kBM);  // 4 loads of A per thread per K step
constexpr int kBPasses = kBN / (kThreads / kBK);  // 4 loads of B per thread per K step
// Bs rows padded by 2 words: the B loads (16 k x 2 n per warp) then fall in 32
// distinct banks.
constexpr int kBNPad = kBN + 2;
static_assert(kThreads == 256 && kBM == 16 * kTM && kBN == 16 * kTN, "thread layout is 16 x 16");
static_assert(kAPasses * (kThreads / kBM) == kBK && kBPasses * (kThreads / kBK) == kBN,
              "load passes must cover the tiles exactly");

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Problem interface (all __device__, const):
//   using acc_t;
//   ARow a_row(g, m);            acc_t load_a(const ARow&, k);
//   BCol b_col(g, n);            acc_t load_b(const BCol&, k);
//   CRow c_row(g, m);            void store(const CRow&, g, split, n, acc_t);
// The kernel only calls them with 0 <= m < M, 0 <= n < N, k in the block's range.
template <typename Problem>
__global__ void __launch_bounds__(kThreads)
    igemm_kernel(const Problem p, int64_t M, int64_t N, int64_t K, int64_t k_chunk,
                 int64_t n_tiles) {
  using acc_t = typename Problem::acc_t;
  LENETALEX_SHARED(acc_t, As, [kBK][kBM]);
  LENETALEX_SHARED(acc_t, Bs, [kBK][kBNPad]);

  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int64_t g = blockIdx.z;
  const int64_t m0 = int64_t(blockIdx.x) * kBM;
  const int64_t n0 = (int64_t(blockIdx.y) % n_tiles) * kBN;
  const int64_t split = int64_t(blockIdx.y) / n_tiles;
  const int64_t k_begin = split * k_chunk;
  const int64_t k_end = K < k_begin + k_chunk ? K : k_begin + k_chunk;

  // This thread's A row and B columns for the loads.
  const int a_m = tid % kBM, a_k = tid / kBM;
  const bool a_ok = m0 + a_m < M;
  typename Problem::ARow arow{};
  if (a_ok) arow = p.a_row(g, m0 + a_m);
  const int b_k = tid % kBK, b_n = tid / kBK;
  typename Problem::BCol bcol[kBPasses];
  bool b_ok[kBPasses];
#pragma unroll
  for (int q = 0; q < kBPasses; ++q) {
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
    for (int q = 0; q < kAPasses; ++q) {
      const int kl = a_k + q * (kThreads / kBM);
      const int64_t k = k0 + kl;
      As[kl][a_m] = (a_ok && k < k_end) ? p.load_a(arow, k) : acc_t(0);
    }
#pragma unroll
    for (int q = 0; q < kBPasses; ++q) {
      const int nl = b_n + q * (kThreads / kBK);
      const int64_t k = k0 + b_k;
      Bs[b_k][nl] = (b_ok[q] && k < k_end) ? p.load_b(bcol[q], k) : acc_t(0);
    }
    __syncthreads();  // tiles complete before anyone reads them
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      acc_t a[kTM], b[kTN];
#pragma unroll
      for (int i = 0; i < kTM; ++i) a[i] = As[kk][tx + 16 * i];
#pragma unroll
      for (int j = 0; j < kTN; ++j) b[j] = Bs[kk][ty + 16 * j];
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
    const int64_t m = m0 + tx + 16 * i;
    if (m >= M) continue;
    const typename Problem::CRow crow = p.c_row(g, m);
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const int64_t n = n0 + ty + 16 * j;
      if (n < N) p.store(crow, g, split, n, acc[i][j]);
    }
  }
}

}  // namespace conv_cuda
}  // namespace lenetalex
