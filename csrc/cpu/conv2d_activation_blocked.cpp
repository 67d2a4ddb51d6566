// conv2d_activation on the CPU, channel-blocked direct path (float32, AVX-512):
// layers with many output channels (AlexNet's conv1, conv2), forward and backward.
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
// Backward, from gpre = grad_output * act'(output) built per image (channels-last):
//   grad_input  (stride 1) = the same convolution of gpre, zero-padded by
//               k - 1 - padding, with the kernel rotated and channels swapped;
//               other strides go through the GEMM path's col2im;
//   grad_weight: wgrad_tile keeps R consecutive (kernel column, channel) taps
//               x B vectors of output channels in registers and sums
//               x[pixel + tap] * gpre[pixel] over every output pixel.
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "cpu/conv2d_activation/kernels.h"
#include "cpu/conv2d_activation/simd.h"
#include "cpu/scratch.h"

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
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

// acc[r][b*16 + l] over R consecutive taps (x + r) of a kernel row and B vectors
// of output channels: sum over pixels p of x[pix[p] + r] * g[p*gld + b*16 + l];
// then out[r*old + b*16 + l] += acc for r < valid.
template <int B, int R>
void wgrad_tile(const float* x, const int64_t* pix, int64_t npix, const float* g, int64_t gld,
                float* out, int64_t old, int64_t valid) {
  __m512 acc[R][B];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int b = 0; b < B; ++b) acc[r][b] = _mm512_setzero_ps();
  for (int64_t p = 0; p < npix; ++p) {
    const float* xp = x + pix[p];
    __m512 gv[B];
#pragma GCC unroll 16
    for (int b = 0; b < B; ++b) gv[b] = _mm512_loadu_ps(g + p * gld + b * V);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_set1_ps(xp[r]);
#pragma GCC unroll 16
      for (int b = 0; b < B; ++b) acc[r][b] = _mm512_fmadd_ps(xv, gv[b], acc[r][b]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    if (r >= valid) break;
#pragma GCC unroll 16
    for (int b = 0; b < B; ++b) {
      float* o = out + r * old + b * V;
      _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), acc[r][b]));
    }
  }
}

using WgradFn = void (*)(const float*, const int64_t*, int64_t, const float*, int64_t, float*,
                         int64_t, int64_t);

// (B vectors of channels, R pixels or taps) tiles with R*B + B + 1 <= 32 registers.
struct Choice {
  int b, r;
  TileFn fn;
  WgradFn wgrad;
};
constexpr Choice kChoices[] = {
    {1, 16, &cblk_tile<1, 16>, &wgrad_tile<1, 16>}, {2, 12, &cblk_tile<2, 12>, &wgrad_tile<2, 12>},
    {3, 8, &cblk_tile<3, 8>, &wgrad_tile<3, 8>},    {4, 6, &cblk_tile<4, 6>, &wgrad_tile<4, 6>},
    {6, 4, &cblk_tile<6, 4>, &wgrad_tile<6, 4>},
};

// The tile with the fewest estimated cycles: per step R*B FMAs on two ports
// or R + B loads, whichever binds, plus the cost of the B vectors coming from
// L1 or L2 (measured: small B with large R wins, B = 1 loses).
Choice choose(int64_t vecs, int64_t width) {
  Choice best = kChoices[0];
  double best_cost = 1e300;
  for (const Choice& c : kChoices) {
    const double steps = double((vecs + c.b - 1) / c.b) * double((width + c.r - 1) / c.r);
    const double cost = steps * (std::max(c.r * c.b * 0.5, (c.r + c.b) * 0.6) + c.b * 0.75 + 0.5);
    if (cost < best_cost) best_cost = cost, best = c;
  }
  return best;
}

// One convolution of a channels-last, zero-padded plane (cin channels, rows
// wp*cin apart) into cout output channels over an oh x ow output.
struct PlaneConv {
  int64_t cin, cout, kh, kw, sh, sw, wp, oh, ow;
  Choice tile;
  int64_t OB, nob, rowlen, K, P, ntiles, chunk, rows_per_chunk;

  PlaneConv(int64_t cin_, int64_t cout_, int64_t kh_, int64_t kw_, int64_t sh_, int64_t sw_,
            int64_t wp_, int64_t oh_, int64_t ow_)
      : cin(cin_), cout(cout_), kh(kh_), kw(kw_), sh(sh_), sw(sw_), wp(wp_), oh(oh_), ow(ow_) {
    P = oh * ow;
    tile = choose((cout + V - 1) / V, P);
    OB = tile.b * V;
    nob = (cout + OB - 1) / OB;
    rowlen = kw * cin;
    K = kh * rowlen;
    ntiles = (P + tile.r - 1) / tile.r;
    // The reduction (kernel rows x kW*cin) is cut into chunks whose weights
    // (chunk x 16*B floats, about 32 KiB) stay in L1 while every pixel tile
    // uses them; the accumulators wait in acc between chunks.
    chunk = std::max<int64_t>(16, (int64_t(32) << 10) / (OB * 4));
    rows_per_chunk = rowlen >= chunk ? 1 : std::max<int64_t>(1, chunk / rowlen);
  }

  // Weights packed for the tiles: wk[blk][i][j][ci][l] = w(blk*OB + l, ci, i, j), zero past cout.
  int64_t packed_size() const { return nob * K * OB; }

  // Each output pixel's receptive field in the plane; pixels past the end repeat the last.
  void bases(const float* plane, std::vector<const float*>& base) const {
    base.resize(ntiles * tile.r);
    for (int64_t k = 0; k < ntiles * tile.r; ++k) {
      const int64_t q = std::min(k, P - 1), y = q / ow, x = q % ow;
      base[k] = plane + (y * sh * wp + x * sw) * cin;
    }
  }

  // acc[q][l] = raw sums for output pixel q and channel ob*OB + l (q < ntiles*R).
  // done(tq) runs after tile tq's sums are complete (the last chunk), while
  // they are in L1.
  template <typename Done>
  void block(const std::vector<const float*>& base, const float* wblk, float* acc,
             Done&& done) const {
    const float* xp[16];
    const int64_t xrow = wp * cin;
    for (int64_t i0 = 0; i0 < kh; i0 += rows_per_chunk) {
      const int64_t rows = std::min(rows_per_chunk, kh - i0);
      for (int64_t m0 = 0; m0 < rowlen; m0 += chunk) {
        const int64_t len = std::min(chunk, rowlen - m0), off = i0 * xrow + m0;
        const bool first = i0 == 0 && m0 == 0, last = i0 + rows == kh && m0 + len == rowlen;
        for (int64_t tq = 0; tq < ntiles; ++tq) {
          for (int64_t r = 0; r < tile.r; ++r) xp[r] = base[tq * tile.r + r] + off;
          tile.fn(xp, rows, len, xrow, wblk + (i0 * rowlen + m0) * OB, rowlen,
                  acc + tq * tile.r * OB, !first);
          if (last) done(tq);
        }
      }
    }
  }
};

// The forward's epilogue on one tile t (px pixels x OB channels, channels-last):
// bias + activation, then the tile transposed into the NCHW rows y[c*P + q].
// 512-bit vectors throughout, so the transpose's loads pick up the epilogue's
// stores from the store buffer (256-bit stores under 512-bit loads stall);
// not inlined, since inlining drops the wide-vector preference.
template <Activation A>
__attribute__((noinline)) LENETALEX_WIDE_VECTORS void finish_tile(
    float* t, int64_t OB, int64_t px, const float* bias, int64_t valid_oc, float* y, int64_t P) {
  for (int64_t q = 0; q < px; ++q) bias_act_channels<A, float>(t + q * OB, bias, valid_oc);
  for (int64_t c0 = 0; c0 < valid_oc; c0 += V) {
    const int nc = int(std::min<int64_t>(V, valid_oc - c0));
    simd::transpose_block(t + c0, OB, int(px), nc, y + c0 * P, P);
  }
}

// Forward weights for group g: wk[ob][i][j][c][l] = W[g*ocg + ob*OB + l][c][i][j]:
// transpose each block to [(c, i, j)][l], then reorder its rows to (i, j, c).
void pack_forward_weights(const Conv2dShape& s, const PlaneConv& pc, const float* w, float* wk) {
  at::parallel_for(0, s.groups * pc.nob, grain(s, s.groups * pc.nob),
                   [&](int64_t begin, int64_t end) {
    std::vector<float> tmp(pc.K * pc.OB);
    const int64_t taps = s.kh * s.kw;
    for (int64_t gb = begin; gb < end; ++gb) {
      const int64_t g = gb / pc.nob, oc0 = gb % pc.nob * pc.OB;
      const int64_t valid = std::min(pc.OB, s.ocg - oc0);
      if (valid < pc.OB) std::fill(tmp.begin(), tmp.end(), 0.0f);
      simd::transpose(w + (g * s.ocg + oc0) * pc.K, pc.K, valid, pc.K, tmp.data(), pc.OB);
      float* dst = wk + gb * pc.K * pc.OB;
      for (int64_t c = 0; c < s.cg; ++c)
        for (int64_t t = 0; t < taps; ++t)
          std::memcpy(dst + (t * s.cg + c) * pc.OB, tmp.data() + (c * taps + t) * pc.OB,
                      pc.OB * sizeof(float));
    }
  });
}

}  // namespace

bool blocked_supported(const Conv2dShape& s) {
  // Enough output channels to fill vectors; the input plane of one image
  // (channels-last, padded) should fit in L2. Padding of a kernel's size or
  // more (rows of nothing but padding) goes the GEMM way, which never builds
  // the padded plane: padding near 2^31 overflowed the plane's size here.
  if (s.ph >= s.kh || s.pw >= s.kw) return false;
  const int64_t plane = (s.h + 2 * s.ph) * (s.w + 2 * s.pw) * s.cg * 4;
  return s.ocg >= 16 && plane <= (int64_t(3) << 20);
}

void forward_blocked(const Conv2dShape& s, const ConvArgs<float>& a, Activation act) {
  Scratch scratch;
  const int64_t hp = s.h + 2 * s.ph, wp = s.w + 2 * s.pw;
  const PlaneConv pc(s.cg, s.ocg, s.kh, s.kw, s.sh, s.sw, wp, s.oh, s.ow);
  float* wk = scratch.floats(s.groups * pc.packed_size());
  pack_forward_weights(s, pc, a.w, wk);

  TaskQueue queue(s, s.n * s.groups);
  at::parallel_for(0, queue.workers(), 1, [&](int64_t, int64_t) {
    Scratch local;
    float* xn = local.floats(hp * wp * s.cg, true);  // borders stay zero
    float* acc = local.floats(pc.ntiles * pc.tile.r * pc.OB);
    float* tmp = local.floats(s.h * s.w * s.cg);
    std::vector<const float*> base;
    pc.bases(xn, base);
    for (int64_t task; queue.next(task);) {
      const int64_t n = task / s.groups, g = task % s.groups;
      pack_plane(a.x + (n * s.c + g * s.cg) * s.h * s.w, s.cg, s.h, s.w, s.ph, s.pw, wp, xn, tmp);
      for (int64_t ob = 0; ob < pc.nob; ++ob) {
        // Epilogue per pixel tile, as soon as its sums are complete: bias +
        // activation (vectorized over channels), then its R pixels x OB
        // channels transposed into the NCHW rows. (As a pass over the whole
        // block afterwards it was 13% of AlexNet conv1's forward.)
        const int64_t oc0 = ob * pc.OB, valid_oc = std::min(pc.OB, s.ocg - oc0);
        const float* bias = a.b ? a.b + g * s.ocg + oc0 : nullptr;
        float* y = a.y + (n * s.oc + g * s.ocg + oc0) * pc.P;
        with_activation(act, [&](auto A) {
          pc.block(base, wk + (g * pc.nob + ob) * pc.K * pc.OB, acc, [&](int64_t tq) {
            const int64_t q0 = tq * pc.tile.r, px = std::min<int64_t>(pc.tile.r, pc.P - q0);
            finish_tile<decltype(A)::value>(acc + q0 * pc.OB, pc.OB, px, bias, valid_oc, y + q0,
                                            pc.P);
          });
        });
      }
    }
  });
}

void backward_blocked(const Conv2dShape& s, const ConvArgs<float>& a, Activation act) {
  Scratch scratch;
  const int64_t P = s.oh * s.ow, HW = s.h * s.w;
  const bool need_gw = a.gw != nullptr, need_gx = a.gx != nullptr;
  // grad_input as a convolution needs stride 1; otherwise the GEMM path's col2im does it.
  const bool direct_gx = need_gx && s.sh == 1 && s.sw == 1;
  if (need_gx && !direct_gx) {
    ConvArgs<float> only_gx = a;
    only_gx.gw = only_gx.gb = nullptr;
    backward_gemm<float>(s, only_gx, act);
  }
  if (!need_gw && !direct_gx && !a.gb) return;

  // grad_input: a stride-1 conv of gpre padded by (k - 1 - pad), output H x W.
  const int64_t top = s.kh - 1 - s.ph, left = s.kw - 1 - s.pw;
  const bool gx_ok = direct_gx && top >= 0 && left >= 0;
  const int64_t hq = s.h + s.kh - 1, wq = s.w + s.kw - 1;
  const PlaneConv px(s.ocg, s.cg, s.kh, s.kw, 1, 1, wq, s.h, s.w);
  float* wx = nullptr;
  if (gx_ok) {  // wx[g][cb][i][j][o][l] = W[g*ocg + o][cb*OB + l][kh-1-i][kw-1-j]
    wx = scratch.floats(s.groups * px.packed_size(), true);
    const int64_t taps = s.kh * s.kw;
    at::parallel_for(0, s.groups * px.nob, grain(s, s.groups * px.nob),
                     [&](int64_t begin, int64_t end) {
      for (int64_t gb = begin; gb < end; ++gb) {
        const int64_t g = gb / px.nob, c0 = gb % px.nob * px.OB;
        const int64_t c1 = std::min(s.cg, c0 + px.OB);
        float* dst = wx + gb * px.K * px.OB;
        for (int64_t o = 0; o < s.ocg; ++o)
          for (int64_t c = c0; c < c1; ++c) {
            const float* src = a.w + ((g * s.ocg + o) * s.cg + c) * taps;
            for (int64_t t = 0; t < taps; ++t)
              dst[((taps - 1 - t) * s.ocg + o) * px.OB + (c - c0)] = src[t];
          }
      }
    });
  } else if (direct_gx) {  // padding wider than the kernel: the GEMM path handles it
    ConvArgs<float> only_gx = a;
    only_gx.gw = only_gx.gb = nullptr;
    backward_gemm<float>(s, only_gx, act);
  }

  // grad_weight: wgrad tiles over (taps along a kernel row) x (output channel vectors).
  const int64_t hp = s.h + 2 * s.ph, wp = s.w + 2 * s.pw;
  const int64_t rowlen = s.kw * s.cg, K = s.kh * rowlen;
  const Choice wt = choose((s.ocg + V - 1) / V, rowlen);
  const int64_t OBw = wt.b * V, ocp = (s.ocg + OBw - 1) / OBw * OBw;
  const int64_t tasks = s.n * s.groups;
  const int64_t slots = slots_for(s, tasks);
  const int64_t part_size = s.groups * K * ocp;  // per slot: [g][(i, j, c)][o]
  float* gwp = need_gw ? scratch.floats(slots * part_size, true) : nullptr;
  float* gbs = a.gb ? scratch.floats(slots * s.oc, true) : nullptr;

  at::parallel_for(0, slots, grain(s, slots), [&](int64_t slot_begin, int64_t slot_end) {
    Scratch local;
    float* gt = local.floats(P * ocp, true);  // gpre, [pixel][o], zero past ocg
    float* ty = local.floats(P * s.ocg);
    float *xn = nullptr, *tmp = nullptr, *gq = nullptr, *acc = nullptr;
    std::vector<int64_t> pix;
    std::vector<const float*> xbase;
    if (need_gw) {
      // Slack past the plane: a tile's taps may run past the last kernel row.
      xn = local.floats(hp * wp * s.cg + 16 * V, true);
      tmp = local.floats(HW * s.cg);
      pix.resize(P);
      for (int64_t q = 0; q < P; ++q) pix[q] = ((q / s.ow) * s.sh * wp + (q % s.ow) * s.sw) * s.cg;
    }
    if (gx_ok) {
      gq = local.floats(hq * wq * s.ocg, true);
      acc = local.floats(px.ntiles * px.tile.r * px.OB);
      px.bases(gq, xbase);
    }
    for (int64_t slot = slot_begin; slot < slot_end; ++slot) {
      const int64_t task_begin = tasks * slot / slots, task_end = tasks * (slot + 1) / slots;
      for (int64_t task = task_begin; task < task_end; ++task) {
        const int64_t n = task / s.groups, g = task % s.groups;
        // Prologue: gpre = grad_output * act'(output), as [pixel][o].
        const int64_t off = (n * s.oc + g * s.ocg) * P;
        grad_pre_channels_last(act, a.gy + off, a.yo + off, P, s.ocg, gt, ocp, ty,
                               gbs ? gbs + slot * s.oc + g * s.ocg : nullptr);
        if (need_gw) {
          pack_plane(a.x + (n * s.c + g * s.cg) * HW, s.cg, s.h, s.w, s.ph, s.pw, wp, xn, tmp);
          float* part = gwp + slot * part_size + g * K * ocp;
          for (int64_t i = 0; i < s.kh; ++i)
            for (int64_t m0 = 0; m0 < rowlen; m0 += wt.r)
              for (int64_t o0 = 0; o0 < ocp; o0 += OBw)
                wt.wgrad(xn + i * wp * s.cg + m0, pix.data(), P, gt + o0, ocp,
                         part + (i * rowlen + m0) * ocp + o0, ocp,
                         std::min<int64_t>(wt.r, rowlen - m0));
        }
        if (gx_ok) {
          for (int64_t q = 0; q < P; ++q)
            std::memcpy(gq + ((top + q / s.ow) * wq + left + q % s.ow) * s.ocg, gt + q * ocp,
                        s.ocg * sizeof(float));
          for (int64_t cb = 0; cb < px.nob; ++cb) {
            px.block(xbase, wx + (g * px.nob + cb) * px.K * px.OB, acc, [](int64_t) {});
            const int64_t c0 = cb * px.OB, valid = std::min(px.OB, s.cg - c0);
            simd::transpose(acc, px.OB, HW, valid, a.gx + (n * s.c + g * s.cg + c0) * HW, HW);
          }
        }
      }
    }
  });

  if (need_gw) {  // sum the slots in order; [g][(i, j, c)][o] -> [g*ocg + o][c][i][j]
    at::parallel_for(0, s.groups * s.cg, grain(s, s.groups * s.cg),
                     [&](int64_t begin, int64_t end) {
      const int64_t taps = s.kh * s.kw;
      for (int64_t gc = begin; gc < end; ++gc) {
        const int64_t g = gc / s.cg, c = gc % s.cg;
        for (int64_t t = 0; t < taps; ++t) {
          const float* src = gwp + g * K * ocp + (t * s.cg + c) * ocp;
          for (int64_t o = 0; o < s.ocg; ++o) {
            float sum = src[o];
            for (int64_t sl = 1; sl < slots; ++sl) sum += src[sl * part_size + o];
            a.gw[((g * s.ocg + o) * s.cg + c) * taps + t] = sum;
          }
        }
      }
    });
  }
  if (a.gb) {
    for (int64_t oc = 0; oc < s.oc; ++oc) {
      float sum = 0;
      for (int64_t sl = 0; sl < slots; ++sl) sum += gbs[sl * s.oc + oc];
      a.gb[oc] = sum;
    }
  }
}

#else  // no AVX-512

bool blocked_supported(const Conv2dShape&) { return false; }
void forward_blocked(const Conv2dShape&, const ConvArgs<float>&, Activation) {}
void backward_blocked(const Conv2dShape&, const ConvArgs<float>&, Activation) {}

#endif

}  // namespace conv_cpu
}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
