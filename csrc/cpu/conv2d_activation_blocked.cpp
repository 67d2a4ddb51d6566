// conv2d_activation on the CPU, channel-blocked direct path (float32, AVX-512):
// layers with many output channels (AlexNet's), forward.
//
// A vector holds 16 output channels. A tile keeps R output pixels x B such
// vectors of accumulators in registers; per step it loads B weight vectors,
// broadcasts one input value per pixel and issues R*B FMAs, so it is bound by
// the FMA ports, not by loads. The input of one (image, group) is first packed
// channels-last and zero-padded, [row][col][channel], so one kernel row of one
// pixel's receptive field (kW columns x C/groups channels) is a single
// contiguous run and the inner loop has no bounds checks. Weights are packed
// once per call to match: [block of 16*B channels][kh][kw][c][16*B].
// The epilogue adds the bias and applies the activation to the tile while it
// is in L1, then scatters it to NCHW.
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "cpu/conv2d_activation_cpu.h"
#include "cpu/conv2d_activation_simd.h"

namespace lenetalex {
namespace conv_cpu {

#if LENETALEX_CONV_SIMD
namespace {

using simd::V;

// t[r][b*16 + l] (+)= sum over i < rows, m < len of x[r][i*xrow + m] * w[i*wrow + m][b*16 + l]
template <int B, int R>
void cblk_tile(const float* const* xp, int64_t rows, int64_t len, int64_t xrow, const float* w,
               int64_t wrow, float* t, bool accumulate) {
  __m512 acc[R][B];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int b = 0; b < B; ++b)
      acc[r][b] = accumulate ? _mm512_load_ps(t + (r * B + b) * V) : _mm512_setzero_ps();
  for (int64_t i = 0; i < rows; ++i) {
    const float* wi = w + i * wrow * B * V;
    const float* xi[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) xi[r] = xp[r] + i * xrow;
    for (int64_t m = 0; m < len; ++m) {
      __m512 wv[B];
#pragma GCC unroll 16
      for (int b = 0; b < B; ++b) wv[b] = _mm512_load_ps(wi + (m * B + b) * V);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m512 xv = _mm512_set1_ps(xi[r][m]);
#pragma GCC unroll 16
        for (int b = 0; b < B; ++b) acc[r][b] = _mm512_fmadd_ps(xv, wv[b], acc[r][b]);
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int b = 0; b < B; ++b) _mm512_store_ps(t + (r * B + b) * V, acc[r][b]);
}

using TileFn = void (*)(const float* const*, int64_t, int64_t, int64_t, const float*, int64_t,
                       float*, bool);

// (B vectors of channels, R pixels) tiles with R*B + B + 1 <= 32 registers.
struct Choice {
  int b, r;
  TileFn fn;
};
constexpr Choice kChoices[] = {
    {1, 16, &cblk_tile<1, 16>}, {2, 12, &cblk_tile<2, 12>}, {3, 8, &cblk_tile<3, 8>},
    {4, 6, &cblk_tile<4, 6>},   {6, 4, &cblk_tile<6, 4>},
};

// The tile with the fewest estimated cycles: per step R*B FMAs on two ports
// or R + B loads, whichever binds, plus the cost of the B weight vectors
// coming from L1 or L2 (measured: small B with large R wins, B = 1 loses).
Choice choose(int64_t vecs, int64_t pixels) {
  Choice best = kChoices[0];
  double best_cost = 1e300;
  for (const Choice& c : kChoices) {
    const double steps = double((vecs + c.b - 1) / c.b) * double((pixels + c.r - 1) / c.r);
    const double cost = steps * (std::max(c.r * c.b * 0.5, (c.r + c.b) * 0.6) + c.b * 0.75 + 0.5);
    if (cost < best_cost) best_cost = cost, best = c;
  }
  return best;
}

}  // namespace

bool blocked_supported(const Conv2dShape& s) {
  // Enough output channels to fill vectors; the input plane of one image
  // (channels-last, padded) should fit in L2.
  const int64_t plane = (s.h + 2 * s.ph) * (s.w + 2 * s.pw) * s.cg * 4;
  return s.ocg >= 16 && plane <= (int64_t(3) << 20);
}

void forward_blocked(const Conv2dShape& s, const ConvArgs<float>& a, Activation act) {
  const int64_t P = s.oh * s.ow, hp = s.h + 2 * s.ph, wp = s.w + 2 * s.pw;
  const int64_t rowlen = s.kw * s.cg, K = s.kh * rowlen, xrow = wp * s.cg;
  const int64_t vecs = (s.ocg + V - 1) / V;
  const Choice tile = choose(vecs, P);
  const int64_t OB = tile.b * V, nob = (vecs + tile.b - 1) / tile.b;

  // Weights: wk[g][ob][i][j][c][l] = W[g*ocg + ob*OB + l][c][i][j], zero past ocg:
  // transpose each block to [(c, i, j)][l], then reorder its rows to (i, j, c).
  at::Tensor wk_hold = at::empty({s.groups * nob * K * OB}, at::TensorOptions().dtype(at::kFloat));
  float* wk = wk_hold.mutable_data_ptr<float>();
  at::parallel_for(0, s.groups * nob, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> tmp(K * OB);
    const int64_t taps = s.kh * s.kw;
    for (int64_t gb = begin; gb < end; ++gb) {
      const int64_t g = gb / nob, oc0 = gb % nob * OB, valid = std::min(OB, s.ocg - oc0);
      if (valid < OB) std::fill(tmp.begin(), tmp.end(), 0.0f);
      simd::transpose(a.w + (g * s.ocg + oc0) * K, K, valid, K, tmp.data(), OB);
      float* dst = wk + gb * K * OB;
      for (int64_t c = 0; c < s.cg; ++c)
        for (int64_t t = 0; t < taps; ++t)
          std::memcpy(dst + (t * s.cg + c) * OB, tmp.data() + (c * taps + t) * OB,
                      OB * sizeof(float));
    }
  });

  // The reduction (kernel rows x kW*C/groups) is cut into chunks whose weights
  // (chunk x 16*B floats, about 32 KiB) stay in L1 while every pixel tile of
  // the image uses them; the accumulators wait in acc between chunks.
  const int64_t chunk = std::max<int64_t>(16, (int64_t(32) << 10) / (OB * 4));
  const int64_t rows_per_chunk = rowlen >= chunk ? 1 : std::max<int64_t>(1, chunk / rowlen);
  const int64_t ntiles = (P + tile.r - 1) / tile.r;

  at::parallel_for(0, s.n * s.groups, 1, [&](int64_t begin, int64_t end) {
    const auto opts = at::TensorOptions().dtype(at::kFloat);
    at::Tensor xn_hold = at::zeros({hp * wp * s.cg}, opts);  // borders stay zero
    at::Tensor acc_hold = at::empty({ntiles * tile.r * OB}, opts);
    float* xn = xn_hold.mutable_data_ptr<float>();
    float* acc = acc_hold.mutable_data_ptr<float>();
    std::vector<const float*> base(ntiles * tile.r);
    std::vector<float> tmp(s.pw == 0 ? 0 : s.h * s.w * s.cg);
    const float* xp[16];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / s.groups, g = task % s.groups;
      // Pack: xn[ph + ih][pw + iw][c] = x[n][g*cg + c][ih][iw].
      const float* src = a.x + (n * s.c + g * s.cg) * s.h * s.w;
      if (s.pw == 0) {  // rows of the padded plane are rows of the input: one transpose
        simd::transpose(src, s.h * s.w, s.cg, s.h * s.w, xn + s.ph * wp * s.cg, s.cg);
      } else {
        simd::transpose(src, s.h * s.w, s.cg, s.h * s.w, tmp.data(), s.cg);
        for (int64_t ih = 0; ih < s.h; ++ih)
          std::memcpy(xn + ((s.ph + ih) * wp + s.pw) * s.cg, tmp.data() + ih * s.w * s.cg,
                      s.w * s.cg * sizeof(float));
      }
      // Each tile pixel's receptive field; pixels past the end repeat the last one.
      for (int64_t k = 0; k < ntiles * tile.r; ++k) {
        const int64_t q = std::min(k, P - 1), oh = q / s.ow, ow = q % s.ow;
        base[k] = xn + (oh * s.sh * wp + ow * s.sw) * s.cg;
      }
      for (int64_t ob = 0; ob < nob; ++ob) {
        const float* wb = wk + (g * nob + ob) * K * OB;
        for (int64_t i0 = 0; i0 < s.kh; i0 += rows_per_chunk) {
          const int64_t rows = std::min(rows_per_chunk, s.kh - i0);
          for (int64_t m0 = 0; m0 < rowlen; m0 += chunk) {
            const int64_t len = std::min(chunk, rowlen - m0), off = i0 * xrow + m0;
            const bool first = i0 == 0 && m0 == 0;
            for (int64_t tq = 0; tq < ntiles; ++tq) {
              for (int64_t r = 0; r < tile.r; ++r) xp[r] = base[tq * tile.r + r] + off;
              tile.fn(xp, rows, len, xrow, wb + (i0 * rowlen + m0) * OB, rowlen,
                      acc + tq * tile.r * OB, !first);
            }
          }
        }
        // Epilogue: bias + activation on each tile (vectorized over channels), then NCHW.
        const int64_t oc0 = ob * OB, valid_oc = std::min(OB, s.ocg - oc0);
        float* y0 = a.y + (n * s.oc + g * s.ocg + oc0) * P;
        const float* bias = a.b ? a.b + g * s.ocg + oc0 : nullptr;
        with_activation(act, [&](auto A) {
          for (int64_t q = 0; q < P; ++q) {
            float* row = acc + q * OB;
            for (int64_t l = 0; l < OB; ++l)
              row[l] = activation_forward<float>(A, row[l] + (bias && l < valid_oc ? bias[l] : 0.0f));
          }
        });
        simd::transpose(acc, OB, P, valid_oc, y0, P);
      }
    }
  });
}

#else  // no AVX-512

bool blocked_supported(const Conv2dShape&) { return false; }
void forward_blocked(const Conv2dShape&, const ConvArgs<float>&, Activation) {}

#endif

}  // namespace conv_cpu
}  // namespace lenetalex
