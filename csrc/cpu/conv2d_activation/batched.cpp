// conv2d_activation on the CPU, image-batched direct path (float32, AVX2 or
// AVX-512): LeNet-like layers (few channels, small kernels, stride 1).
//
// With 1 to 16 channels, vectorizing over channels or output columns wastes
// most of each vector. Here a vector holds one value of V different images
// instead (V = 16 with AVX-512, 8 with AVX2), so every lane is used whatever
// the channel counts: a task takes a block of V images, transposes them to
// [channel][row][col][V images] ("lanes"), and the convolution becomes
// scalar-looking code on vectors:
//   forward:     Yb[o][p] = sum W[o][c][i][j] * Xb[c][p + (i, j)]          (conv_tile)
//   grad_input:  the same kernel on the padded gpre with flipped weights   (conv_tile)
//   grad_weight: gw[o][c][i][j] += sum_p gpre[o][p] * Xb[c][p + (i, j)]    (wgrad_tile)
// Each tile keeps B channels x R columns of accumulators in registers. The
// epilogue (bias + activation) runs on the lanes while the tile is in cache,
// before the VxV transposes back to NCHW; the backward's prologue builds
// gpre = grad_output * act'(output) the same way. grad_weight and grad_bias
// are per-slot vector partials, summed in a fixed order at the end.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "cpu/conv2d_activation/kernels.h"
#include "cpu/conv2d_activation/simd.h"
#include "cpu/scratch.h"

// The tiles are written on at::vec::Vectorized<float> (ATen's vector type, in
// this variant's width: CPU_CAPABILITY, set by setup.py), which compiles to
// the same FMAs as hand-written intrinsics; only the AVX2 and AVX-512 variants
// take this path (the baseline's Vectorized is an emulated 8-lane array, no
// faster than the GEMM path).
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#include <ATen/cpu/vec/vec.h>
#define LENETALEX_CONV_LANES 1
#else
#define LENETALEX_CONV_LANES 0
#endif

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace conv_cpu {

#if LENETALEX_CONV_LANES
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int V = Vec::size();  // images per block: 16 with AVX-512, 8 with AVX2
static_assert(V == 8 || V == 16, "the batched path expects AVX2 or AVX-512 vectors");
// Vector registers a tile may fill: 32 zmm with AVX-512, 16 ymm with AVX2.
constexpr int kRegs = V == 16 ? 32 : 16;

// Images to lanes: dst[q*V + t] = src[t*ld + q] for q < n; lanes t >= nt are 0.
void pack_lanes(const float* src, int64_t ld, int nt, int64_t n, float* dst) {
#if LENETALEX_CONV_SIMD
  simd::pack_lanes(src, ld, nt, n, dst);
#else
  int64_t q = 0;
  if (nt == V)
    for (; q + V <= n; q += V) at::vec::transpose_mxn<float, V, V>(src + q, ld, dst + q * V, V);
  for (; q < n; ++q)
    for (int t = 0; t < V; ++t) dst[q * V + t] = t < nt ? src[t * ld + q] : 0.0f;
#endif
}

// Lanes to images: dst[t*ld + q] = src[q*V + t] for q < n, t < nt.
void unpack_lanes(const float* src, int64_t n, float* dst, int64_t ld, int nt) {
#if LENETALEX_CONV_SIMD
  simd::unpack_lanes(src, n, dst, ld, nt);
#else
  int64_t q = 0;
  if (nt == V)
    for (; q + V <= n; q += V) at::vec::transpose_mxn<float, V, V>(src + q * V, V, dst + q, ld);
  for (; q < n; ++q)
    for (int t = 0; t < nt; ++t) dst[t * ld + q] = src[q * V + t];
#endif
}

// Yb[b][r] = sum over c, kernel rows i in [i0, i1), j of w[c][i][j][b] *
// x[c][i][r + j] for B output channels (planes oplane apart) and R output
// columns; x points at the tile's top-left input pixel, rows xrow apart,
// channels xplane apart. Rows outside [i0, i1) would only meet zero padding.
template <int B, int R>
void conv_tile(const float* x, int64_t C, int64_t kh, int64_t i0, int64_t i1, int64_t kw,
               int64_t xplane, int64_t xrow, const float* w, float* out, int64_t oplane) {
  Vec acc[B][R];
#pragma GCC unroll 16
  for (int b = 0; b < B; ++b)
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[b][r] = Vec(0.0f);
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t i = i0; i < i1; ++i) {
      const float* xr = x + c * xplane + i * xrow;
      const float* wr = w + (c * kh + i) * kw * B;
      for (int64_t j = 0; j < kw; ++j) {
        Vec wv[B];
#pragma GCC unroll 16
        for (int b = 0; b < B; ++b) wv[b] = Vec(wr[j * B + b]);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          const Vec xv = Vec::loadu(xr + (j + r) * V);
#pragma GCC unroll 16
          for (int b = 0; b < B; ++b) acc[b][r] = at::vec::fmadd(wv[b], xv, acc[b][r]);
        }
      }
    }
  }
#pragma GCC unroll 16
  for (int b = 0; b < B; ++b)
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[b][r].store(out + b * oplane + r * V);
}

// out[b][r] += sum over output pixels (oh, ow) of g[b][oh][ow] * x[oh][ow + r]:
// B output channels of gpre (planes gplane apart, rows grow apart) against R
// consecutive kernel columns of one input channel and kernel row.
template <int B, int R>
void wgrad_tile(const float* g, int64_t gplane, int64_t grow, const float* x, int64_t xrow,
                int64_t oh_n, int64_t ow_n, float* out, int64_t ostride) {
  Vec acc[B][R];
#pragma GCC unroll 16
  for (int b = 0; b < B; ++b)
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[b][r] = Vec(0.0f);
  for (int64_t oh = 0; oh < oh_n; ++oh) {
    const float* gr = g + oh * grow;
    const float* xr = x + oh * xrow;
    for (int64_t ow = 0; ow < ow_n; ++ow) {
      Vec gv[B];
#pragma GCC unroll 16
      for (int b = 0; b < B; ++b) gv[b] = Vec::loadu(gr + b * gplane + ow * V);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const Vec xv = Vec::loadu(xr + (ow + r) * V);
#pragma GCC unroll 16
        for (int b = 0; b < B; ++b) acc[b][r] = at::vec::fmadd(gv[b], xv, acc[b][r]);
      }
    }
  }
#pragma GCC unroll 16
  for (int b = 0; b < B; ++b)
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      float* o = out + b * ostride + r * V;
      (Vec::loadu(o) + acc[b][r]).store(o);
    }
}

// Tiles exist for B <= 6 channels and R columns with B*R + B + 1 <= kRegs
// registers (accumulators, broadcast weights or loaded gpre, one operand).
constexpr int kMaxB = 6, kMaxR = 16;
constexpr int max_r(int b) { return std::min(kMaxR, (kRegs - 1 - b) / b); }

using ConvTileFn = void (*)(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                            int64_t, const float*, float*, int64_t);
using WgradTileFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, int64_t,
                             int64_t, float*, int64_t);

struct TileTable {
  ConvTileFn conv[kMaxB + 1][kMaxR + 1] = {};
  WgradTileFn wgrad[kMaxB + 1][kMaxR + 1] = {};
  template <int B, int R>
  void fill() {
    if constexpr (R >= 1) {
      if constexpr (R <= max_r(B)) {
        conv[B][R] = &conv_tile<B, R>;
        wgrad[B][R] = &wgrad_tile<B, R>;
      }
      fill<B, R - 1>();
    }
  }
  TileTable() {
    fill<1, kMaxR>();
    fill<2, kMaxR>();
    fill<3, kMaxR>();
    fill<4, kMaxR>();
    fill<5, kMaxR>();
    fill<6, kMaxR>();
  }
};
const TileTable& tiles() {
  static const TileTable table;
  return table;
}

struct Tile {
  int b, r;
};

// The (B, R) tile with the fewest estimated cycles for `chans` channels by
// `width` columns: each step issues R*B FMAs on 2 ports and B + R loads on 2
// ports. With `divide`, R must divide width (grad_weight's kernel columns).
Tile choose_tile(int64_t chans, int64_t width, bool divide) {
  Tile best{1, 1};
  double best_cost = 1e300;
  for (int b = 1; b <= kMaxB; ++b) {
    for (int r = 1; r <= max_r(b); ++r) {
      if (divide && width % r != 0) continue;
      if (r > width && r > 1) continue;
      const double steps = double((chans + b - 1) / b) * double((width + r - 1) / r);
      const double cost = steps * (std::max(r * b, b + r) * 0.5 + 1.0);
      if (cost < best_cost) best_cost = cost, best = Tile{b, r};
    }
  }
  return best;
}

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Per-call geometry of the batched path.
struct Plan {
  int64_t K, P;       // cg*kh*kw, oh*ow
  Tile ft;            // forward tile (output channels x output columns)
  int64_t ocp, owp;   // output channels and columns rounded up to the tile
  int64_t hp, wp;     // padded input plane (forward and grad_weight)
  int64_t blocks;     // V-image blocks
};

Plan make_plan(const Conv2dShape& s) {
  Plan p;
  p.K = s.cg * s.kh * s.kw;
  p.P = s.oh * s.ow;
  p.ft = choose_tile(s.ocg, s.ow, false);
  p.ocp = round_up(s.ocg, p.ft.b);
  p.owp = round_up(s.ow, p.ft.r);
  p.hp = s.h + 2 * s.ph;
  p.wp = std::max(s.w + 2 * s.pw, p.owp + s.kw - 1);
  p.blocks = (s.n + V - 1) / V;
  return p;
}

// Xb[c][ph + ih][pw + iw][t] = x[n0 + t][c0 + c][ih][iw]; the border stays as
// zeroed at allocation. tmp holds one H*W*V plane.
void pack_input(const Conv2dShape& s, const Plan& p, const float* x, int64_t n0, int nt,
                int64_t c0, int64_t channels, float* xb, float* tmp) {
  const int64_t hw = s.h * s.w, ld = s.c * hw;
  for (int64_t c = 0; c < channels; ++c) {
    const float* src = x + n0 * ld + (c0 + c) * hw;
    float* plane = xb + c * p.hp * p.wp * V;
    if (s.ph == 0 && s.pw == 0 && p.wp == s.w) {
      pack_lanes(src, ld, nt, hw, plane);
      continue;
    }
    pack_lanes(src, ld, nt, hw, tmp);
    for (int64_t ih = 0; ih < s.h; ++ih)
      std::memcpy(plane + ((s.ph + ih) * p.wp + s.pw) * V, tmp + ih * s.w * V,
                  s.w * V * sizeof(float));
  }
}

void pack_weights_forward(const Conv2dShape& s, const Plan& p, const float* w, float* wk) {
  const int64_t B = p.ft.b, nob = p.ocp / B;
  for (int64_t g = 0; g < s.groups; ++g)
    for (int64_t ob = 0; ob < nob; ++ob)
      for (int64_t k = 0; k < p.K; ++k)
        for (int64_t b = 0; b < B; ++b) {
          const int64_t o = ob * B + b;
          wk[((g * nob + ob) * p.K + k) * B + b] =
              o < s.ocg ? w[(g * s.ocg + o) * p.K + k] : 0.0f;
        }
}

}  // namespace

bool batched_supported(const Conv2dShape& s) {
  if (s.sh != 1 || s.sw != 1 || s.n < V) return false;
  if (s.ph >= s.kh || s.pw >= s.kw) return false;
  if (covers_input(s)) return false;  // a matrix product: the GEMM path
  if (s.cg > 32 || s.ocg > 64 || s.kh > 11 || s.kw > 11) return false;
  // Per-task buffers of about L2 size at most.
  const int64_t plane_bytes = (s.h + 2 * s.kh) * (s.w + 2 * s.kw + 16) * V * 4;
  return plane_bytes * std::max(s.cg, s.ocg) <= (int64_t(4) << 20);
}

void forward_batched(const Conv2dShape& s, const ConvArgs<float>& a, Activation act) {
  Scratch scratch;
  const Plan p = make_plan(s);
  const int64_t B = p.ft.b, R = p.ft.r, nob = p.ocp / B;
  const ConvTileFn tile = tiles().conv[B][R];
  float* wk = scratch.floats(s.groups * p.ocp * p.K, false);
  pack_weights_forward(s, p, a.w, wk);
  const int64_t xplane = p.hp * p.wp * V, oplane = s.oh * p.owp * V;

  TaskQueue queue(s, p.blocks * s.groups);
  at::parallel_for(0, queue.workers(), 1, [&](int64_t, int64_t) {
    Scratch local;
    float* xb = local.floats(s.cg * xplane, true);
    float* yb = local.floats(p.ocp * oplane, false);
    float* tmp = local.floats(s.h * s.w * V, false);
    for (int64_t task; queue.next(task);) {
      const int64_t g = task % s.groups, n0 = task / s.groups * V;
      const int nt = static_cast<int>(std::min<int64_t>(V, s.n - n0));
      pack_input(s, p, a.x, n0, nt, g * s.cg, s.cg, xb, tmp);
      for (int64_t ob = 0; ob < nob; ++ob)
        for (int64_t oh = 0; oh < s.oh; ++oh) {
          // kernel rows that meet real input rows (ph <= oh + i < ph + h)
          const int64_t i0 = std::max<int64_t>(0, s.ph - oh);
          const int64_t i1 = std::min<int64_t>(s.kh, s.ph + s.h - oh);
          for (int64_t ow = 0; ow < p.owp; ow += R)
            tile(xb + (oh * p.wp + ow) * V, s.cg, s.kh, i0, i1, s.kw, xplane, p.wp * V,
                 wk + (g * nob + ob) * p.K * B, yb + ob * B * oplane + (oh * p.owp + ow) * V,
                 oplane);
        }
      // Epilogue on the lanes while they are hot, then back to NCHW.
      with_activation(act, [&](auto A) {
        for (int64_t o = 0; o < s.ocg; ++o) {
          const int64_t oc = g * s.ocg + o;
          float* plane = yb + o * oplane;
          bias_act_row<decltype(A)::value, float>(plane, plane, oplane, a.b ? a.b[oc] : 0.0f);
          float* dst = a.y + (n0 * s.oc + oc) * p.P;
          if (p.owp == s.ow) {
            unpack_lanes(plane, p.P, dst, s.oc * p.P, nt);
          } else {
            for (int64_t oh = 0; oh < s.oh; ++oh)
              unpack_lanes(plane + oh * p.owp * V, s.ow, dst + oh * s.ow, s.oc * p.P, nt);
          }
        }
      });
    }
  });
}

void backward_batched(const Conv2dShape& s, const ConvArgs<float>& a, Activation act) {
  Scratch scratch;
  const Plan p = make_plan(s);
  const bool need_gx = a.gx != nullptr, need_gw = a.gw != nullptr;
  // gpre lanes: padded by (k - 1 - pad) when grad_input needs the full correlation.
  const Tile xt = choose_tile(s.cg, s.w, false);          // grad_input tile
  const Tile wt = choose_tile(s.ocg, s.kw, true);         // grad_weight tile
  const int64_t ocp = round_up(s.ocg, wt.b), cgp = round_up(s.cg, xt.b);
  const int64_t wr = round_up(s.w, xt.r);                  // grad_input columns, rounded
  const int64_t top = need_gx ? s.kh - 1 - s.ph : 0, left = need_gx ? s.kw - 1 - s.pw : 0;
  const int64_t hq = need_gx ? s.h + s.kh - 1 : s.oh;
  const int64_t wq = need_gx ? std::max(wr + s.kw - 1, left + s.ow) : s.ow;
  const int64_t gplane = hq * wq * V, xplane = p.hp * p.wp * V, xoplane = s.h * wr * V;
  const int64_t gint = (top * wq + left) * V;  // offset of gpre's interior in a plane

  // Flipped, transposed weights for grad_input:
  // wf[g][cb][o][i][j][b] = W[o][cb*B + b][kh-1-i][kw-1-j].
  float* wf = nullptr;
  const int64_t ncb = cgp / xt.b, kk = s.kh * s.kw;
  if (need_gx) {
    wf = scratch.floats(s.groups * ncb * s.ocg * kk * xt.b, false);
    for (int64_t g = 0; g < s.groups; ++g)
      for (int64_t cb = 0; cb < ncb; ++cb)
        for (int64_t o = 0; o < s.ocg; ++o)
          for (int64_t t = 0; t < kk; ++t)
            for (int64_t b = 0; b < xt.b; ++b) {
              const int64_t c = cb * xt.b + b;
              wf[(((g * ncb + cb) * s.ocg + o) * kk + t) * xt.b + b] =
                  c < s.cg ? a.w[((g * s.ocg + o) * s.cg + c) * kk + (kk - 1 - t)] : 0.0f;
            }
  }

  const int64_t tasks = p.blocks * s.groups;
  const int64_t slots = slots_for(s, tasks);
  const int64_t gw_part = s.groups * ocp * p.K * V;  // per slot: [g][o][k][lane]
  float* gwv = need_gw ? scratch.floats(slots * gw_part, true) : nullptr;
  float* gbv = a.gb ? scratch.floats(slots * s.oc * V, true) : nullptr;

  at::parallel_for(0, slots, grain(s, slots), [&](int64_t slot_begin, int64_t slot_end) {
    Scratch local;
    float* gp = local.floats(ocp * gplane, true);
    float* tg = local.floats(p.P * V, false);
    float* ty = local.floats(std::max(p.P, s.h * s.w) * V, false);
    float* xb = need_gw ? local.floats(s.cg * xplane, true) : nullptr;
    float* gxb = need_gx ? local.floats(cgp * xoplane, false) : nullptr;
    for (int64_t slot = slot_begin; slot < slot_end; ++slot) {
      const int64_t task_begin = tasks * slot / slots, task_end = tasks * (slot + 1) / slots;
      for (int64_t task = task_begin; task < task_end; ++task) {
        const int64_t g = task % s.groups, n0 = task / s.groups * V;
        const int nt = static_cast<int>(std::min<int64_t>(V, s.n - n0));
        // Prologue: gpre = grad_output * act'(output), on the lanes.
        with_activation(act, [&](auto A) {
          for (int64_t o = 0; o < s.ocg; ++o) {
            const int64_t oc = g * s.ocg + o, off = (n0 * s.oc + oc) * p.P;
            pack_lanes(a.gy + off, s.oc * p.P, nt, p.P, tg);
            pack_lanes(a.yo + off, s.oc * p.P, nt, p.P, ty);
            grad_pre_row<decltype(A)::value, float>(tg, ty, tg, p.P * V);
            if (gbv) {
              float* acc = gbv + (slot * s.oc + oc) * V;
              for (int64_t q = 0; q < p.P; ++q)
                for (int t = 0; t < V; ++t) acc[t] += tg[q * V + t];
            }
            float* plane = gp + o * gplane + gint;
            for (int64_t oh = 0; oh < s.oh; ++oh)
              std::memcpy(plane + oh * wq * V, tg + oh * s.ow * V, s.ow * V * sizeof(float));
          }
        });
        if (need_gw) {
          pack_input(s, p, a.x, n0, nt, g * s.cg, s.cg, xb, ty);
          const WgradTileFn tile = tiles().wgrad[wt.b][wt.r];
          float* part = gwv + slot * gw_part + g * ocp * p.K * V;
          for (int64_t c = 0; c < s.cg; ++c)
            for (int64_t i = 0; i < s.kh; ++i)
              for (int64_t ob = 0; ob < ocp; ob += wt.b)
                for (int64_t j = 0; j < s.kw; j += wt.r)
                  tile(gp + ob * gplane + gint, gplane, wq * V,
                       xb + c * xplane + (i * p.wp + j) * V, p.wp * V, s.oh, s.ow,
                       part + (ob * p.K + (c * s.kh + i) * s.kw + j) * V, p.K * V);
        }
        if (need_gx) {
          const ConvTileFn tile = tiles().conv[xt.b][xt.r];
          for (int64_t cb = 0; cb < ncb; ++cb)
            for (int64_t ih = 0; ih < s.h; ++ih) {
              // kernel rows that meet gpre's rows (top <= ih + i < top + oh), not its padding
              const int64_t i0 = std::max<int64_t>(0, top - ih);
              const int64_t i1 = std::min<int64_t>(s.kh, top + s.oh - ih);
              for (int64_t iw = 0; iw < wr; iw += xt.r)
                tile(gp + (ih * wq + iw) * V, s.ocg, s.kh, i0, i1, s.kw, gplane, wq * V,
                     wf + (g * ncb + cb) * s.ocg * kk * xt.b,
                     gxb + cb * xt.b * xoplane + (ih * wr + iw) * V, xoplane);
            }
          for (int64_t c = 0; c < s.cg; ++c) {
            float* dst = a.gx + (n0 * s.c + g * s.cg + c) * s.h * s.w;
            for (int64_t ih = 0; ih < s.h; ++ih)
              unpack_lanes(gxb + c * xoplane + ih * wr * V, s.w, dst + ih * s.w,
                                 s.c * s.h * s.w, nt);
          }
        }
      }
    }
  });
  // Sum the partials over slots (in order) and lanes.
  if (need_gw) {
    at::parallel_for(0, s.oc, grain(s, s.oc), [&](int64_t begin, int64_t end) {
      for (int64_t oc = begin; oc < end; ++oc) {
        const int64_t g = oc / s.ocg, o = oc % s.ocg;
        for (int64_t k = 0; k < p.K; ++k) {
          float lanes[V] = {};
          for (int64_t sl = 0; sl < slots; ++sl) {
            const float* src = gwv + sl * gw_part + ((g * ocp + o) * p.K + k) * V;
            for (int t = 0; t < V; ++t) lanes[t] += src[t];
          }
          float sum = 0;
          for (int t = 0; t < V; ++t) sum += lanes[t];
          a.gw[oc * p.K + k] = sum;
        }
      }
    });
  }
  if (a.gb) {
    for (int64_t oc = 0; oc < s.oc; ++oc) {
      float lanes[V] = {};
      for (int64_t sl = 0; sl < slots; ++sl)
        for (int t = 0; t < V; ++t) lanes[t] += gbv[(sl * s.oc + oc) * V + t];
      float sum = 0;
      for (int t = 0; t < V; ++t) sum += lanes[t];
      a.gb[oc] = sum;
    }
  }
}

#else  // the baseline variant: the GEMM path takes these calls

bool batched_supported(const Conv2dShape&) { return false; }
void forward_batched(const Conv2dShape&, const ConvArgs<float>&, Activation) {}
void backward_batched(const Conv2dShape&, const ConvArgs<float>&, Activation) {}

#endif

}  // namespace conv_cpu
}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
