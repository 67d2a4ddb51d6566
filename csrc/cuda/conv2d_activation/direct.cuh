// conv2d_activation on CUDA: the direct forward kernel for LeNet-sized layers
// (small filters, few channels, where a GEMM's 64 x 64 tiles would mostly be
// padding).
//
// One block computes a TH x TW tile of output pixels (one thread each) for
// kOCB output channels of one image and group, so each thread keeps kOCB
// accumulators in registers. Per chunk of input channels the block stages in
// shared memory (in acc_t):
//   in_s[ci][IN_TH][IN_TW]  the input tile with its halo, zeros where the
//                           window hangs over the padding:
//                           IN_TH = (TH - 1) * sh + KH, IN_TW = (TW - 1) * sw + KW
//   w_s[o][ci][KH * KW]     the kOCB filters' taps for these channels
// then every thread runs the whole window over the chunk. The epilogue adds the
// bias and applies the activation before the single store.
// Grid: one block per (n, group, channel block, spatial tile), flattened into
// grid.x (tile fastest). Block: (TW, TH) threads, chosen by the host.
#pragma once

#include <cstdint>

#include <ATen/OpMathType.h>

#include "common/activation.h"
#include "cuda/launch.cuh"
#include "ops/conv2d_activation.h"

namespace lenetalex {
namespace conv_cuda {

constexpr int kOCB = 8;  // output channels per block (registers per thread)

// The launch geometry the host picked (see plan_direct in the .cu).
struct DirectPlan {
  int tw, th;           // output tile = block shape
  int in_tw, in_th;     // input tile with halo
  int ci_chunk;         // input channels staged per step
  int64_t tiles_w, tiles, oc_blocks;
};

template <typename scalar_t>
__global__ void direct_forward_kernel(const scalar_t* __restrict__ x,
                                      const scalar_t* __restrict__ w,
                                      const scalar_t* __restrict__ b, scalar_t* __restrict__ y,
                                      const Conv2dShape s, const DirectPlan d, Activation act) {
  using acc_t = at::opmath_type<scalar_t>;
  // Raw bytes, cast: a typed extern array would clash between instantiations.
  LENETALEX_DYNAMIC_SHARED(unsigned char, smem_raw, 16);
  acc_t* in_s = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* w_s = in_s + d.ci_chunk * d.in_th * d.in_tw;

  const int tx = threadIdx.x, ty = threadIdx.y;
  const int tid = ty * d.tw + tx, nthreads = d.tw * d.th;
  int64_t bid = blockIdx.x;
  const int64_t tile = bid % d.tiles;
  bid /= d.tiles;
  const int64_t ocb = bid % d.oc_blocks;
  bid /= d.oc_blocks;
  const int64_t g = bid % s.groups, n = bid / s.groups;

  const int64_t oh0 = (tile / d.tiles_w) * d.th, ow0 = (tile % d.tiles_w) * d.tw;
  const int64_t oh = oh0 + ty, ow = ow0 + tx;
  const bool active = oh < s.oh && ow < s.ow;  // edge tiles: idle threads still load and sync
  const int64_t ih0 = oh0 * s.sh - s.ph, iw0 = ow0 * s.sw - s.pw;
  const int kh_n = int(s.kh), kw_n = int(s.kw), kk = kh_n * kw_n;
  const int in_plane = d.in_th * d.in_tw;
  const int64_t oc_first = g * s.ocg + ocb * kOCB;                   // first channel of the block
  const int n_oc = int(s.ocg - ocb * kOCB < kOCB ? s.ocg - ocb * kOCB : kOCB);  // valid ones
  const scalar_t* xg = x + (n * s.c + g * s.cg) * s.h * s.w;

  acc_t acc[kOCB];
#pragma unroll
  for (int o = 0; o < kOCB; ++o) acc[o] = acc_t(0);

  for (int64_t c0 = 0; c0 < s.cg; c0 += d.ci_chunk) {
    const int cc = int(s.cg - c0 < d.ci_chunk ? s.cg - c0 : d.ci_chunk);
    for (int e = tid; e < cc * in_plane; e += nthreads) {
      const int ci = e / in_plane, r = e - ci * in_plane;
      const int iy = r / d.in_tw, ix = r - iy * d.in_tw;
      const int64_t ih = ih0 + iy, iw = iw0 + ix;
      in_s[e] = (ih >= 0 && ih < s.h && iw >= 0 && iw < s.w)
                    ? static_cast<acc_t>(xg[((c0 + ci) * s.h + ih) * s.w + iw])
                    : acc_t(0);
    }
    // Filter o's taps for channels c0..c0+cc are contiguous in w: cc * kk values.
    const int per_oc = cc * kk;
    for (int e = tid; e < kOCB * per_oc; e += nthreads) {
      const int o = e / per_oc, r = e - o * per_oc;
      w_s[e] = o < n_oc ? static_cast<acc_t>(w[((oc_first + o) * s.cg + c0) * kk + r]) : acc_t(0);
    }
    __syncthreads();  // tiles staged before use
    if (active) {
      for (int ci = 0; ci < cc; ++ci) {
        const acc_t* in_c = in_s + ci * in_plane + (ty * int(s.sh)) * d.in_tw + tx * int(s.sw);
        const acc_t* w_c = w_s + ci * kk;
        for (int khi = 0; khi < kh_n; ++khi) {
          for (int kwi = 0; kwi < kw_n; ++kwi) {
            const acc_t v = in_c[khi * d.in_tw + kwi];
            const int t = khi * kw_n + kwi;
#pragma unroll
            for (int o = 0; o < kOCB; ++o) acc[o] += v * w_c[o * per_oc + t];  // broadcast read
          }
        }
      }
    }
    __syncthreads();  // all reads done before the next chunk overwrites
  }

  if (!active) return;
  const int64_t P = s.oh * s.ow;
  scalar_t* out = y + (n * s.oc + oc_first) * P + oh * s.ow + ow;
#pragma unroll
  for (int o = 0; o < kOCB; ++o) {
    if (o >= n_oc) break;
    acc_t v = acc[o];
    if (b != nullptr) v += static_cast<acc_t>(b[oc_first + o]);
    out[o * P] = static_cast<scalar_t>(activation_forward<acc_t>(act, v));
  }
}

}  // namespace conv_cuda
}  // namespace lenetalex
