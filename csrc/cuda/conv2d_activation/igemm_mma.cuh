// conv2d_activation on CUDA: the implicit GEMM of igemm.cuh on tensor cores,
// for float16 and bfloat16 (mma.sync m16n8k16, float accumulation; mma.cuh).
// The same Problems (problems.cuh) gather A and B and store C, so the
// forward, grad_input and grad_weight all run here in half types; the grid
// and split-K are igemm_kernel's (grid.x = M tiles, grid.y = N tiles *
// splits, grid.z = groups; K steps of kBK = 16, one mma k-step each).
//
// Block: 128 threads, 4 warps, a 64 x BN tile of C (BN = 16, 32 or 64: the
// backward's N is often 1..16 channels). Warp w owns rows 16 w .. 16 w + 15
// and all BN columns: BN / 8 mma tiles, so each A fragment feeds BN / 8 mmas.
// Per K step the block stages, converted once to scalar_t:
//   As[m][k]  64 x 16: thread loads m = tid % 64 (its row context fixed for
//             the loop, as in igemm_kernel) at k = tid / 64 + 2 q, q = 0..7;
//   Bs[n][k]  BN x 16: thread loads k = tid % 16 (consecutive k: coalesced
//             reads of filters and of gy/y) at n = tid / 16 + 8 q.
// Both keep k contiguous, so every fragment register is one 32-bit shared
// load; rows are padded to 24 values (12 words), which puts the 32 lanes'
// fragment loads (word 12 gid + tig) in 32 distinct banks.
// In the backward, gpre (formed in float by the Problem) is rounded to
// scalar_t on its way into Bs or As, as PyTorch's eager backward rounds its
// activation gradient; everything is summed in float.
// Estimate (not measured): per K step a 64 x 64 block does 65536 FMAs in 32
// mma instructions, against ~5000 warp instructions of SIMT FMAs and shared
// loads in igemm_kernel; what is left is the gathers (16 per thread, each
// with the Problem's index math, ~1000 warp instructions): gather-bound at
// roughly 4-5x the SIMT kernel's throughput in half types. Still well under
// cuDNN's on large layers, which plan.cuh therefore sends to cuDNN.
#pragma once

#include <cstdint>

#include "cuda/conv2d_activation/igemm.cuh"
#include "cuda/launch.cuh"
#include "cuda/mma.cuh"

namespace lenetalex {
namespace conv_cuda {

constexpr int kMmaThreads = 128;
constexpr int kMmaBM = 64;             // 4 warps x 16 rows
constexpr int kMmaRow = kBK + 8;       // padded row of As / Bs, in values
static_assert(kBK == 16, "one m16n8k16 step per K step");

template <typename scalar_t, int BN>
struct alignas(16) MmaTiles {
  scalar_t a[kMmaBM][kMmaRow];
  scalar_t b[BN][kMmaRow];
};

template <typename Problem, typename scalar_t, int BN>
__global__ void __launch_bounds__(kMmaThreads)
    igemm_mma_kernel(const Problem p, int64_t M, int64_t N, int64_t K, int64_t k_chunk,
                     int64_t n_tiles) {
  static_assert(BN % 16 == 0 && BN <= 64, "BN: 16, 32 or 64");
  constexpr int kNT = BN / 8;                        // mma tiles per warp
  constexpr int kAPasses = kBK * kMmaBM / kMmaThreads;  // 8
  constexpr int kBPasses = kBK * BN / kMmaThreads;      // 2, 4 or 8
  using acc_t = typename Problem::acc_t;
  using Tiles = MmaTiles<scalar_t, BN>;  // one type: the macro takes no template commas
  LENETALEX_SHARED(Tiles, tiles, [1]);
  auto& As = tiles[0].a;
  auto& Bs = tiles[0].b;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int gid = lane / 4, tig = lane % 4;
  const int64_t g = blockIdx.z;
  const int64_t m0 = int64_t(blockIdx.x) * kMmaBM;
  const int64_t n0 = (int64_t(blockIdx.y) % n_tiles) * BN;
  const int64_t split = int64_t(blockIdx.y) / n_tiles;
  const int64_t k_begin = split * k_chunk;
  const int64_t k_end = K < k_begin + k_chunk ? K : k_begin + k_chunk;

  const int a_m = tid % kMmaBM, a_k = tid / kMmaBM;
  const bool a_ok = m0 + a_m < M;
  typename Problem::ARow arow{};
  if (a_ok) arow = p.a_row(g, m0 + a_m);
  const int b_k = tid % kBK, b_n = tid / kBK;
  typename Problem::BCol bcol[kBPasses];
  bool b_ok[kBPasses];
#pragma unroll
  for (int q = 0; q < kBPasses; ++q) {
    const int64_t n = n0 + b_n + q * (kMmaThreads / kBK);
    b_ok[q] = n < N;
    bcol[q] = {};
    if (b_ok[q]) bcol[q] = p.b_col(g, n);
  }

  float acc[kNT][4];
#pragma unroll
  for (int t = 0; t < kNT; ++t)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[t][i] = 0.0f;

  const int r0 = warp * 16 + gid;  // this lane's A rows r0, r0 + 8 and C rows likewise
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kBK) {
#pragma unroll
    for (int q = 0; q < kAPasses; ++q) {
      const int kl = a_k + q * (kMmaThreads / kMmaBM);
      const int64_t k = k0 + kl;
      As[a_m][kl] = static_cast<scalar_t>((a_ok && k < k_end) ? p.load_a(arow, k) : acc_t(0));
    }
#pragma unroll
    for (int q = 0; q < kBPasses; ++q) {
      const int nl = b_n + q * (kMmaThreads / kBK);
      const int64_t k = k0 + b_k;
      Bs[nl][b_k] = static_cast<scalar_t>((b_ok[q] && k < k_end) ? p.load_b(bcol[q], k) : acc_t(0));
    }
    __syncthreads();  // tiles complete before anyone reads them
    const uint32_t a[4] = {load_pair(&As[r0][2 * tig]), load_pair(&As[r0 + 8][2 * tig]),
                           load_pair(&As[r0][2 * tig + 8]), load_pair(&As[r0 + 8][2 * tig + 8])};
#pragma unroll
    for (int t = 0; t < kNT; ++t) {
      const uint32_t b[2] = {load_pair(&Bs[8 * t + gid][2 * tig]),
                             load_pair(&Bs[8 * t + gid][2 * tig + 8])};
      mma_m16n8k16<scalar_t>(acc[t], a, b);
    }
    __syncthreads();  // everyone done reading before the next loads overwrite
  }

  // Epilogue: lane holds C[r0 + 8 h][8 t + 2 tig + j] in acc[t][2 h + j].
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t m = m0 + r0 + 8 * h;
    if (m >= M) continue;
    const typename Problem::CRow crow = p.c_row(g, m);
#pragma unroll
    for (int t = 0; t < kNT; ++t)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int64_t n = n0 + 8 * t + 2 * tig + j;
        if (n < N) p.store(crow, g, split, n, acc_t(acc[t][2 * h + j]));
      }
  }
}

}  // namespace conv_cuda
}  // namespace lenetalex
