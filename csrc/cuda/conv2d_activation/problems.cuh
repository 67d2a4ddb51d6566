// conv2d_activation on CUDA: the three convolutions as implicit GEMMs, i.e. the
// Problems that igemm_kernel (igemm.cuh) runs. Each says how
// to gather A and B from the tensors and what to do with C.
//
// Notation: input x (N, C, H, W), weight w (OC, cg, KH, KW), output y and its
// grad gy (N, OC, OH, OW), all contiguous; per group g: cg input channels,
// ocg output channels; P = OH * OW, HW = H * W, kk = KH * KW.
//
//   forward      C[m = (n, oh, ow)][j]      A = input patches, B = filters
//                M = N*P, N = ocg, K = cg*kk;  epilogue act(C + bias) -> y
//   grad_input   C[m = (n, ih, iw)][ci]     A = gpre gathered over the output
//                positions that see (ih, iw) (a transposed conv), B = filters
//                M = N*HW, N = cg, K = ocg*kk; epilogue plain store -> gx,
//                or, with split-K (LeNet's C5: K = 3000), a workspace slice
//   grad_weight  C[m = (ci, kh, kw)][j]     A = input patches (transposed),
//                B = gpre; M = cg*kk, N = ocg, K = N*P (the reduction);
//                epilogue: store -> gw, or, with split-K, into a float
//                workspace slice that a finishing kernel sums in fixed order.
//
// gpre = gy * act'(y), the pre-activation grad, is never stored: it is formed
// in acc_t as each element is loaded (the backward's fused prologue).
//
// Index math: anything that spans the batch (m, the reduction index, addresses)
// is int64_t; divisions inside one filter (k -> channel, kh, kw) or one image
// plane are done in int, which the host checks fit (check_cuda_limits).
#pragma once

#include <cstdint>

#include <ATen/OpMathType.h>

#include "common/activation.h"
#include "cuda/launch.cuh"
#include "ops/conv2d_activation.h"

namespace lenetalex {
namespace conv_cuda {

template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t pre_activation_grad(const scalar_t* gy, const scalar_t* y,
                                                     int64_t i, Activation act) {
  return static_cast<acc_t>(gy[i]) *
         activation_grad_from_output<acc_t>(act, static_cast<acc_t>(y[i]));
}

template <typename scalar_t>
struct ForwardProblem {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* x;
  const scalar_t* w;
  const scalar_t* b;  // nullptr: no bias
  scalar_t* y;
  Conv2dShape s;
  Activation act;
  int64_t P, K;  // OH*OW, cg*kk
  int kk, kw;

  struct ARow {
    const scalar_t* img;  // x at (n, first channel of the group)
    int64_t ih0, iw0;     // input position of the window's top-left tap
  };
  __device__ ARow a_row(int64_t g, int64_t m) const {
    const int64_t n = m / P, pix = m - n * P;
    const int64_t oh = pix / s.ow, ow = pix - oh * s.ow;
    return {x + (n * s.c + g * s.cg) * s.h * s.w, oh * s.sh - s.ph, ow * s.sw - s.pw};
  }
  __device__ acc_t load_a(const ARow& r, int64_t k) const {
    const int ci = int(k) / kk, tap = int(k) - ci * kk;
    const int khi = tap / kw, kwi = tap - khi * kw;
    const int64_t ih = r.ih0 + khi, iw = r.iw0 + kwi;
    if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) return acc_t(0);  // zero padding
    return static_cast<acc_t>(r.img[(ci * s.h + ih) * s.w + iw]);
  }

  struct BCol {
    const scalar_t* filter;  // w at (output channel, 0, 0, 0): K contiguous values
  };
  __device__ BCol b_col(int64_t g, int64_t j) const { return {w + (g * s.ocg + j) * K}; }
  __device__ acc_t load_b(const BCol& c, int64_t k) const {
    return static_cast<acc_t>(c.filter[k]);
  }

  struct CRow {
    scalar_t* out;  // y at (n, first channel of the group, oh, ow)
  };
  __device__ CRow c_row(int64_t g, int64_t m) const {
    const int64_t n = m / P, pix = m - n * P;
    return {y + (n * s.oc + g * s.ocg) * P + pix};
  }
  __device__ void store(const CRow& r, int64_t g, int64_t /*split*/, int64_t j, acc_t v) const {
    if (b != nullptr) v += static_cast<acc_t>(b[g * s.ocg + j]);
    r.out[j * P] = static_cast<scalar_t>(activation_forward<acc_t>(act, v));
  }
};

template <typename scalar_t>
struct GradInputProblem {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* gy;
  const scalar_t* y;
  const scalar_t* w;
  scalar_t* gx;  // written when ws is nullptr (one split)
  acc_t* ws;     // splits x gx.numel() partial sums, or nullptr
  Conv2dShape s;
  Activation act;
  int64_t P, HW, numel;  // OH*OW, H*W, gx.numel()
  int kk, kw;

  struct ARow {
    const scalar_t* gy;  // gy at (n, first output channel of the group)
    const scalar_t* y;   // likewise for y
    int64_t th, tw;      // ih + ph, iw + pw: the tap (kh, kw) came from output oh = (th - kh) / sh
  };
  __device__ ARow a_row(int64_t g, int64_t m) const {
    const int64_t n = m / HW, pix = m - n * HW;
    const int64_t ih = pix / s.w, iw = pix - ih * s.w;
    const int64_t base = (n * s.oc + g * s.ocg) * P;
    return {gy + base, y + base, ih + s.ph, iw + s.pw};
  }
  // k = (j, kh, kw): the output (j, oh, ow) whose window tap (kh, kw) is this
  // input pixel, if there is one (stride divides, inside the output).
  __device__ acc_t load_a(const ARow& r, int64_t k) const {
    const int j = int(k) / kk, tap = int(k) - j * kk;
    const int khi = tap / kw, kwi = tap - khi * kw;
    const int64_t th = r.th - khi, tw = r.tw - kwi;
    if (th < 0 || tw < 0) return acc_t(0);
    // 0 <= th < H + ph and 0 <= tw < W + pw fit int (check_cuda_limits): 32-bit division.
    const int64_t oh = int(th) / int(s.sh), ow = int(tw) / int(s.sw);
    if (oh * s.sh != th || ow * s.sw != tw || oh >= s.oh || ow >= s.ow) return acc_t(0);
    return pre_activation_grad<acc_t>(r.gy, r.y, j * P + oh * s.ow + ow, act);
  }

  struct BCol {
    const scalar_t* filter;  // w at (first output channel of the group, ci, 0, 0)
  };
  __device__ BCol b_col(int64_t g, int64_t ci) const {
    return {w + (g * s.ocg * s.cg + ci) * kk};
  }
  __device__ acc_t load_b(const BCol& c, int64_t k) const {
    const int j = int(k) / kk, tap = int(k) - j * kk;
    return static_cast<acc_t>(c.filter[int64_t(j) * s.cg * kk + tap]);
  }

  struct CRow {
    int64_t at;  // gx index of (n, first input channel of the group, ih, iw)
  };
  __device__ CRow c_row(int64_t g, int64_t m) const {
    const int64_t n = m / HW, pix = m - n * HW;
    return {(n * s.c + g * s.cg) * HW + pix};
  }
  __device__ void store(const CRow& r, int64_t, int64_t split, int64_t ci, acc_t v) const {
    const int64_t i = r.at + ci * HW;
    if (ws != nullptr) {
      ws[split * numel + i] = v;
    } else {
      gx[i] = static_cast<scalar_t>(v);
    }
  }
};

template <typename scalar_t>
struct GradWeightProblem {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* gy;
  const scalar_t* y;
  const scalar_t* x;
  scalar_t* gw;  // written when ws is nullptr (one split)
  acc_t* ws;     // splits x OC x Kw partial sums, or nullptr
  Conv2dShape s;
  Activation act;
  int64_t P, HW, Kw;  // OH*OW, H*W, cg*kk
  int kk, kw;

  struct ARow {
    const scalar_t* plane;  // x at (image 0, input channel)
    int64_t dh, dw;         // kh - ph, kw - pw: input row = oh * sh + dh
  };
  __device__ ARow a_row(int64_t g, int64_t m) const {
    const int ci = int(m) / kk, tap = int(m) - ci * kk;
    const int khi = tap / kw, kwi = tap - khi * kw;
    return {x + (g * s.cg + ci) * HW, khi - s.ph, kwi - s.pw};
  }
  // k here is the reduction index over (n, oh, ow).
  __device__ acc_t load_a(const ARow& r, int64_t k) const {
    const int64_t n = k / P, pix = k - n * P;
    const int64_t oh = int(pix) / int(s.ow), ow = pix - oh * s.ow;  // pix < P fits int
    const int64_t ih = oh * s.sh + r.dh, iw = ow * s.sw + r.dw;
    if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) return acc_t(0);
    return static_cast<acc_t>(r.plane[n * s.c * HW + ih * s.w + iw]);
  }

  struct BCol {
    const scalar_t* gy;  // gy at (image 0, output channel)
    const scalar_t* y;
  };
  __device__ BCol b_col(int64_t g, int64_t j) const {
    const int64_t base = (g * s.ocg + j) * P;
    return {gy + base, y + base};
  }
  __device__ acc_t load_b(const BCol& c, int64_t k) const {
    const int64_t n = k / P, pix = k - n * P;
    return pre_activation_grad<acc_t>(c.gy, c.y, n * s.oc * P + pix, act);
  }

  struct CRow {
    int64_t m;  // (ci, kh, kw) within the filter
  };
  __device__ CRow c_row(int64_t, int64_t m) const { return {m}; }
  __device__ void store(const CRow& r, int64_t g, int64_t split, int64_t j, acc_t v) const {
    const int64_t i = (g * s.ocg + j) * Kw + r.m;  // gw is (OC, cg, KH, KW) contiguous
    if (ws != nullptr) {
      ws[split * s.oc * Kw + i] = v;
    } else {
      gw[i] = static_cast<scalar_t>(v);
    }
  }
};

}  // namespace conv_cuda
}  // namespace lenetalex
