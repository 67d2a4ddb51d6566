// conv2d_activation on the CPU, Winograd path (float32): 3x3 and 5x5 kernels,
// stride 1, many channels (AlexNet's conv2-5).
//
// Winograd F(m x m, r x r) computes each m x m output tile from an n x n
// input tile d, n = m + r - 1:
//   y = A^T [ (G g G^T) . (B^T d B) ] A        (. elementwise over n*n points)
// so per tile and channel pair it needs n*n multiplications instead of
// m*m*r*r: 36 for 144 with F(4x4, 3x3), 49 for 225 with F(3x3, 5x5), the
// tiles AlexNet's layers take (with_tile picks; F(2x2, .) for small outputs).
// Over all channels the points become n*n independent matrix products,
//   M[xi] (tiles x out) = V[xi] (tiles x in) . U[xi] (in x out),
// done by ATen's GEMM (MKL); the transforms are passes vectorized over
// channels. The output transform applies bias and activation to the tile
// while it is hot. The matrices (winograd.h) come from the
// Toom-Cook construction; B^T holds small integers, the divisions sit in G,
// applied once per call to the weights.
// Backward (backward_tiles: chunks of images, three phases each):
//   grad_input  = a Winograd convolution of gpre (padded by r - 1 - padding)
//                 with the weights rotated 180 degrees and transposed;
//   grad_weight = G^T [ sum over tiles of (A gpre_tile A^T) . (B^T d B) ] G:
//                 n*n GEMMs Gh[xi]^T . V[xi] over the chunk's tiles, then the
//                 inverse weight transform;
//   gpre = grad_output * act'(output), from the saved output.
#include <ATen/Parallel.h>

#include <cstring>
#include <vector>

#include "cpu/conv2d_activation/kernels.h"
#include "cpu/conv2d_activation/simd.h"
#include "cpu/conv2d_activation/winograd.h"
#include "cpu/scratch.h"

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace conv_cpu {

#if LENETALEX_CONV_SIMD
namespace {

using namespace winograd;

// Tiles over an oh x ow output, read from a zero-padded channels-last plane of
// at least (m*th + r - 1) x (m*tw + r - 1) pixels, wp pixels to a row: tile
// (i, j) reads rows m*i .. m*i + n - 1.
struct Tiling {
  int64_t oh, ow, th, tw, hp, wp;
  int64_t tiles() const { return th * tw; }
};

template <typename W>
Tiling tiling(int64_t oh, int64_t ow) {
  const int64_t th = (oh + W::m - 1) / W::m, tw = (ow + W::m - 1) / W::m;
  return {oh, ow, th, tw, W::m * th + W::r - 1, W::m * tw + W::r - 1};
}

// The per-tile transforms below vectorize over 16 channels at a time (the
// last vector masked). Their Winograd-domain side is laid out
// [point][tile][channel] with `ps` floats between points, so that several
// images' tiles stack into one GEMM.
using simd::V;
inline __mmask16 lanes(int64_t left) { return left >= V ? 0xFFFF : __mmask16((1u << left) - 1); }

// v[xi][t][c] = (B^T d B)[xi] for every tile t of the plane xn ([hp][wp][ch]).
template <typename W>
void input_transform(const float* xn, const Tiling& tl, int64_t ch, float* v, int64_t ps) {
  constexpr int n = W::n;
  const int64_t row = tl.wp * ch;
  for (int64_t i = 0; i < tl.th; ++i)
    for (int64_t j = 0; j < tl.tw; ++j)
      for (int64_t c = 0; c < ch; c += V) {
        const __mmask16 k = lanes(ch - c);
        const float* d = xn + (W::m * (i * tl.wp + j)) * ch + c;
        __m512 x[n][n], y[n][n];
#pragma GCC unroll 8
        for (int a = 0; a < n; ++a)
#pragma GCC unroll 8
          for (int b = 0; b < n; ++b) x[a][b] = _mm512_maskz_loadu_ps(k, d + a * row + b * ch);
        sandwich<false, n, n>(W::BT, x, y);
        float* out = v + (i * tl.tw + j) * ch + c;
#pragma GCC unroll 64
        for (int p = 0; p < n * n; ++p, out += ps) _mm512_mask_storeu_ps(out, k, y[p / n][p % n]);
      }
}

// yn[oh][ow][co] = act(A^T m A + bias) for every tile; only pixels inside the
// output are written. Bias and activation run on the tile's pixels while they
// are in L1.
template <typename W, Activation A>
LENETALEX_WIDE_VECTORS void output_transform(const float* m, const Tiling& tl, int64_t cout,
                                             int64_t ps, const float* bias, float* yn) {
  constexpr int n = W::n, mt = W::m;
  for (int64_t i = 0; i < tl.th; ++i)
    for (int64_t j = 0; j < tl.tw; ++j) {
      const int64_t rows = std::min<int64_t>(mt, tl.oh - mt * i);
      const int64_t cols = std::min<int64_t>(mt, tl.ow - mt * j);
      float* y0 = yn + mt * (i * tl.ow + j) * cout;
      for (int64_t co = 0; co < cout; co += V) {
        const __mmask16 k = lanes(cout - co);
        const float* in = m + (i * tl.tw + j) * cout + co;
        __m512 x[n][n], o[mt][mt];
#pragma GCC unroll 64
        for (int p = 0; p < n * n; ++p, in += ps) x[p / n][p % n] = _mm512_maskz_loadu_ps(k, in);
        sandwich<false, mt, n>(W::AT, x, o);
        if (rows == mt && cols == mt) {
#pragma GCC unroll 16
          for (int p = 0; p < mt * mt; ++p)
            _mm512_mask_storeu_ps(y0 + ((p / mt) * tl.ow + p % mt) * cout + co, k, o[p / mt][p % mt]);
        } else {  // a tile over the bottom or right edge
          for (int64_t a = 0; a < rows; ++a)
            for (int64_t b = 0; b < cols; ++b)
              _mm512_mask_storeu_ps(y0 + (a * tl.ow + b) * cout + co, k, o[a][b]);
        }
      }
      if (A == Activation::Identity && !bias) continue;
      for (int64_t a = 0; a < rows; ++a)
        for (int64_t b = 0; b < cols; ++b)
          bias_act_channels<A, float>(y0 + (a * tl.ow + b) * cout, bias, cout);
    }
}

// gh[xi][t][co] = (A p A^T)[xi] for the m x m block p of gpre at each tile; gp
// is a channels-last plane, rows wp*ch apart, zero past the output.
template <typename W>
void grad_output_transform(const float* gp, int64_t wp, const Tiling& tl, int64_t ch, float* gh,
                           int64_t ps) {
  constexpr int n = W::n, mt = W::m;
  const int64_t row = wp * ch;
  for (int64_t i = 0; i < tl.th; ++i)
    for (int64_t j = 0; j < tl.tw; ++j)
      for (int64_t c = 0; c < ch; c += V) {
        const __mmask16 k = lanes(ch - c);
        const float* p = gp + (mt * (i * wp + j)) * ch + c;
        __m512 x[mt][mt], h[n][n];
#pragma GCC unroll 16
        for (int q = 0; q < mt * mt; ++q)
          x[q / mt][q % mt] = _mm512_maskz_loadu_ps(k, p + (q / mt) * row + (q % mt) * ch);
        sandwich<true, n, mt>(W::AT, x, h);
        float* out = gh + (i * tl.tw + j) * ch + c;
#pragma GCC unroll 64
        for (int q = 0; q < n * n; ++q, out += ps) _mm512_mask_storeu_ps(out, k, h[q / n][q % n]);
      }
}

// G g G^T for 16 kernels side by side (the lanes in k): tap t of kernel l is
// src[t*ld + l], point xi goes to out[xi*ps + l].
template <typename W>
inline void kernel_transform(const float* src, int64_t ld, __mmask16 k, float* out, int64_t ps) {
  constexpr int n = W::n, r = W::r;
  __m512 g[r][r], u[n][n];
#pragma GCC unroll 32
  for (int t = 0; t < r * r; ++t) g[t / r][t % r] = _mm512_maskz_loadu_ps(k, src + t * ld);
  sandwich<false, n, r>(W::G, g, u);
#pragma GCC unroll 64
  for (int p = 0; p < n * n; ++p, out += ps) _mm512_mask_storeu_ps(out, k, u[p / n][p % n]);
}

// Forward weights: u[xi][c][o] for c in [c0, c1), from wt[((c - c0)*r*r + t)][o]
// (the block of W transposed).
template <typename W>
void weight_transform(const float* wt, int64_t cg, int64_t ocg, int64_t c0, int64_t c1, float* u) {
  constexpr int taps = W::r * W::r;
  for (int64_t c = c0; c < c1; ++c)
    for (int64_t o = 0; o < ocg; o += V)
      kernel_transform<W>(wt + (c - c0) * taps * ocg + o, ocg, lanes(ocg - o), u + c * ocg + o,
                          cg * ocg);
}

// grad_input weights: u[xi][o][c] from W[o][c] rotated by 180 degrees, o in [o0, o1).
// Each W[o] ([c][r*r]) is first transposed to tmp[r*r][c], so the transform reads along c.
template <typename W>
void weight_transform_flipped(const float* w, int64_t cg, int64_t ocg, int64_t o0, int64_t o1,
                              float* u) {
  constexpr int taps = W::r * W::r;
  std::vector<float> tmp(taps * cg);
  for (int64_t o = o0; o < o1; ++o) {
    const float* src = w + o * cg * taps;
    for (int64_t c = 0; c < cg; ++c)
      for (int t = 0; t < taps; ++t) tmp[(taps - 1 - t) * cg + c] = src[c * taps + t];
    for (int64_t c = 0; c < cg; c += V)
      kernel_transform<W>(tmp.data() + c, cg, lanes(cg - c), u + o * cg + c, cg * ocg);
  }
}

// grad_weight from grad u ([xi][o][c] per group): gw[o][c] = G^T X G, the
// inverse of kernel_transform's sandwich, 16 channels at a time into tmp
// ([tap][c], r*r x cg floats), then one interleave of tmp's rows into gw's
// [c][tap] (its setup, per call, cost as much as the math at 16 channels).
template <typename W>
void inverse_weight_transform(const float* gu, int64_t cg, int64_t ocg, int64_t o, float* tmp,
                              float* out) {
  constexpr int n = W::n, r = W::r, taps = r * r;
  for (int64_t c = 0; c < cg; c += V) {
    const __mmask16 k = lanes(cg - c);
    const float* in = gu + o * cg + c;
    __m512 x[n][n], g[r][r];
#pragma GCC unroll 64
    for (int p = 0; p < n * n; ++p, in += cg * ocg) x[p / n][p % n] = _mm512_maskz_loadu_ps(k, in);
    sandwich<true, r, n>(W::G, x, g);
#pragma GCC unroll 32
    for (int t = 0; t < taps; ++t) _mm512_mask_storeu_ps(tmp + t * cg + c, k, g[t / r][t % r]);
  }
  simd::transpose(tmp, cg, taps, cg, out, taps);
}

// Image n's group g of the input as the zero-padded channels-last plane that
// input_transform reads (wp pixels to a row). On the polyphase path
// (`strided`: the strided convolution, s its stride-1 form) the plane of the
// input's stride phases, taken straight from the strided input.
inline void pack_input(const Conv2dShape& s, const Conv2dShape* strided, const float* x,
                       int64_t n, int64_t g, int64_t wp, float* xn, float* tmp) {
  if (strided) {
    const Conv2dShape& o = *strided;
    return pack_phases(o, x + (n * o.c + g * o.cg) * o.h * o.w, s.h, s.w, wp, xn);
  }
  pack_plane(x + (n * s.c + g * s.cg) * s.h * s.w, s.cg, s.h, s.w, s.ph, s.pw, wp, xn, tmp);
}

// Images per chunk: the chunk's buffers within a budget of floats, a count set
// by the shape alone. The forward's buffers are written by one phase and read
// by the next once, so a smaller chunk (16 MB) keeps them in cache: AlexNet
// conv1 (polyphase) runs 12% faster than in 32 MB chunks, conv2-5 the same or
// slightly faster. The backward also accumulates grad_weight's transform over
// the chunks, so it wants fewer: AlexNet conv3's backward at batch 8 takes one
// 28 MB chunk in 22 ms, against 26 ms in two chunks of 4 (fewer, longer GEMMs).
constexpr int64_t kForwardChunkFloats = int64_t(1) << 22;
constexpr int64_t kBackwardChunkFloats = int64_t(1) << 23;

inline int64_t chunk_images(const Conv2dShape& s, int64_t floats_per_image, int64_t budget) {
  return std::clamp<int64_t>(budget / floats_per_image, 1, s.n);
}

// Phase 3 of the forward and of grad_input: for each (image i, group g) of
// the chunk starting at image n0, the output transform of its tiles in m
// ([g][point][row][cout], ps floats between points, tl.tiles() rows per
// image) with the group's bias (or none) and the activation, then the
// transpose into its cout NCHW planes of out.
template <typename W>
void output_phase(const Conv2dShape& s, const Tiling& tl, int64_t n0, int64_t nimg, int64_t cout,
                  const float* m, int64_t ps, const float* bias, Activation act, float* out) {
  constexpr int pts = W::n * W::n;
  const int64_t G = s.groups, P = tl.oh * tl.ow, T = tl.tiles();
  TaskQueue finish(s, nimg * G);
  at::parallel_for(0, finish.workers(), 1, [&](int64_t, int64_t) {
    Scratch local;
    float* buf = local.floats(P * cout);  // one image's group, channels-last
    for (int64_t item; finish.next(item);) {
      const int64_t i = item / G, g = item % G;
      with_activation(act, [&](auto A) {
        output_transform<W, decltype(A)::value>(m + g * pts * ps + i * T * cout, tl, cout, ps,
                                                bias ? bias + g * cout : nullptr, buf);
      });
      simd::transpose(buf, cout, P, cout, out + ((n0 + i) * G + g) * cout * P, P);
    }
  });
}

// Forward, in chunks of images (as the backward below), three parallel phases each:
//   1. per (image, group): the input's transform V;
//   2. per (group, point): M[xi] = V[xi] . U[xi], one GEMM over the chunk's tiles;
//   3. per (image, group): the output transform with bias and activation, into NCHW.
// Against tasks of a few images each doing all three, this is as fast at
// AlexNet's batch 8 and faster at batch 4 (conv3: 5.0 against 6.3 ms), where
// those tasks were too few for the threads.
template <typename W>
void forward_tiles(const Conv2dShape& s, const ConvArgs<float>& a, Activation act,
                   const Conv2dShape* strided) {
  Scratch scratch;
  constexpr int taps = W::r * W::r, pts = W::n * W::n;
  const Tiling tl = tiling<W>(s.oh, s.ow);
  const int64_t T = tl.tiles(), K = s.cg * taps;
  const int64_t upt = pts * s.cg * s.ocg, cblk = 16, ncb = (s.cg + cblk - 1) / cblk;
  // u[g][xi][c][o], from blocks of W transposed to [(c, k)][o].
  float* u = scratch.floats(s.groups * upt);
  at::parallel_for(0, s.groups * ncb, grain(s, s.groups * ncb), [&](int64_t begin, int64_t end) {
    std::vector<float> wt(cblk * taps * s.ocg);
    for (int64_t gb = begin; gb < end; ++gb) {
      const int64_t g = gb / ncb, c0 = gb % ncb * cblk, c1 = std::min(s.cg, c0 + cblk);
      simd::transpose(a.w + g * s.ocg * K + c0 * taps, K, s.ocg, (c1 - c0) * taps, wt.data(),
                      s.ocg);
      weight_transform<W>(wt.data(), s.cg, s.ocg, c0, c1, u + g * upt);
    }
  });
  const int64_t G = s.groups;
  const int64_t imgs = chunk_images(s, G * pts * T * (s.cg + s.ocg), kForwardChunkFloats);
  const int64_t rows = imgs * T, ps = rows * s.cg, pm = rows * s.ocg;
  float* v = scratch.floats(G * pts * rows * s.cg);
  float* m = scratch.floats(G * pts * rows * s.ocg);
  for (int64_t n0 = 0; n0 < s.n; n0 += imgs) {
    const int64_t nimg = std::min(imgs, s.n - n0), items = nimg * G;
    TaskQueue prep(s, items);
    at::parallel_for(0, prep.workers(), 1, [&](int64_t, int64_t) {
      Scratch local;
      float* xn = local.floats(tl.hp * tl.wp * s.cg, true);  // zero border, interior rewritten
      float* tmp = local.floats(s.h * s.w * s.cg);
      for (int64_t item; prep.next(item);) {
        const int64_t i = item / G, g = item % G;
        pack_input(s, strided, a.x, n0 + i, g, tl.wp, xn, tmp);
        input_transform<W>(xn, tl, s.cg, v + g * pts * ps + i * T * s.cg, ps);
      }
    });
    TaskQueue mul(s, G * pts);
    at::parallel_for(0, mul.workers(), 1, [&](int64_t, int64_t) {
      for (int64_t task; mul.next(task);) {  // M[g][xi] = V[xi] . U[xi]
        const int64_t g = task / pts, p = task % pts;
        gemm<float>(false, false, nimg * T, s.ocg, s.cg, v + (g * pts + p) * ps, s.cg,
                    u + g * upt + p * s.cg * s.ocg, s.ocg, m + (g * pts + p) * pm, s.ocg, false);
      }
    });
    output_phase<W>(s, tl, n0, nimg, s.ocg, m, pm, a.b, act, a.y);
  }
}



// gpre's padded plane for grad_input, written whole (zeros around it) so it
// needs no clearing: rows of hp x wp pixels x ch, gpre (oh x ow x ch,
// channels-last) at (top, left).
inline void place_padded(const float* gpre, int64_t oh, int64_t ow, int64_t ch, int64_t top,
                         int64_t left, int64_t hp, int64_t wp, float* plane) {
  const int64_t right = (wp - left - ow) * ch;
  for (int64_t i = 0; i < hp; ++i) {
    float* row = plane + i * wp * ch;
    if (i < top || i >= top + oh) {
      std::memset(row, 0, wp * ch * sizeof(float));
      continue;
    }
    std::memset(row, 0, left * ch * sizeof(float));
    std::memcpy(row + left * ch, gpre + (i - top) * ow * ch, ow * ch * sizeof(float));
    std::memset(row + (left + ow) * ch, 0, right * sizeof(float));
  }
}

// Backward, in chunks of images (a count fixed by the shape, so results do
// not depend on the number of threads), each in three parallel phases:
//   1. per (image, group): gpre into its padded plane; the Winograd-domain
//      matrices of the chunk: V (input) and Gh (gpre) for grad_weight, Vx
//      (gpre's plane) for grad_input; the image's grad_bias sums.
//   2. per (group, point): grad u[xi] = Gh[xi]^T . V[xi] (+= after the first
//      chunk) and Mx[xi] = Vx[xi] . Ux[xi], each one GEMM over all of the
//      chunk's tiles: no per-thread partials to clear and sum, and a long
//      reduction for MKL.
//   3. per (image, group): grad_input = the output transform of Mx.
// Then grad_weight = G^T (grad u) G, grad_bias = the image sums in order.
template <typename W>
void backward_tiles(const Conv2dShape& s, const ConvArgs<float>& a, Activation act,
                    const Conv2dShape* strided) {
  Scratch scratch;
  constexpr int r = W::r, taps = r * r, pts = W::n * W::n;
  const Tiling tl = tiling<W>(s.oh, s.ow);  // grad_weight: the forward's tiles
  const int64_t top = r - 1 - s.ph, left = r - 1 - s.pw;  // gpre's place in its padded plane
  // grad_input's tiles, over a gpre plane that also holds grad_weight's tiles of gpre.
  Tiling tx = tiling<W>(s.h, s.w);
  tx.hp = std::max(tx.hp, top + W::m * tl.th);
  tx.wp = std::max(tx.wp, left + W::m * tl.tw);
  const int64_t P = s.oh * s.ow, HW = s.h * s.w, T = tl.tiles(), TX = tx.tiles();
  const int64_t G = s.groups, gplane = tx.hp * tx.wp * s.ocg;
  const bool need_gx = a.gx != nullptr, need_gw = a.gw != nullptr;
  const int64_t upt = pts * s.cg * s.ocg;  // per group: ux, grad u

  // grad_input's weights: ux[g][xi][o][c], the kernel rotated, channels swapped.
  float* ux = nullptr;
  if (need_gx) {
    ux = scratch.floats(G * upt);
    const int64_t oblk = 16, nob = (s.ocg + oblk - 1) / oblk;
    at::parallel_for(0, G * nob, grain(s, G * nob), [&](int64_t begin, int64_t end) {
      for (int64_t gb = begin; gb < end; ++gb) {
        const int64_t g = gb / nob, o0 = gb % nob * oblk, o1 = std::min(s.ocg, o0 + oblk);
        weight_transform_flipped<W>(a.w + g * s.ocg * s.cg * taps, s.cg, s.ocg, o0, o1,
                                     ux + g * upt);
      }
    });
  }

  const int64_t imgs = chunk_images(s, G * (gplane + (need_gw ? pts * T * (s.cg + s.ocg) : 0) +
                                             (need_gx ? pts * TX * (s.ocg + s.cg) : 0)),
                                    kBackwardChunkFloats);
  const int64_t rows = imgs * T, rows_x = imgs * TX;  // GEMM rows of a full chunk
  float* gq = scratch.floats(imgs * G * gplane);
  float *v = nullptr, *gh = nullptr, *gu = nullptr, *vx = nullptr, *mx = nullptr;
  if (need_gw) {
    v = scratch.floats(G * pts * rows * s.cg);
    gh = scratch.floats(G * pts * rows * s.ocg);
    gu = scratch.floats(G * upt);  // [g][xi][o][c]: the inverse transform reads along c
  }
  if (need_gx) {
    vx = scratch.floats(G * pts * rows_x * s.ocg);
    mx = scratch.floats(G * pts * rows_x * s.cg);
  }
  float* gbs = a.gb ? scratch.floats(s.n * s.oc, true) : nullptr;  // per image

  for (int64_t n0 = 0; n0 < s.n; n0 += imgs) {
    const int64_t nimg = std::min(imgs, s.n - n0), items = nimg * G;
    // The chunk's GEMMs have nimg*T rows; buffers keep the strides of a full chunk.
    const int64_t ps = rows * s.cg, psg = rows * s.ocg, psx = rows_x * s.ocg, psm = rows_x * s.cg;
    TaskQueue prep(s, items);
    at::parallel_for(0, prep.workers(), 1, [&](int64_t, int64_t) {
      Scratch local;
      float* tg = local.floats(P * s.ocg);
      float* ty = local.floats(P * s.ocg);
      float* xn = need_gw ? local.floats(tl.hp * tl.wp * s.cg, true) : nullptr;  // zero border
      float* tmp = need_gw ? local.floats(HW * s.cg) : nullptr;
      for (int64_t item; prep.next(item);) {
        const int64_t i = item / G, g = item % G, n = n0 + i, off = (n * s.oc + g * s.ocg) * P;
        float* plane = gq + item * gplane;
        grad_pre_channels_last(act, a.gy + off, a.yo + off, P, s.ocg, tg, s.ocg, ty,
                               gbs ? gbs + n * s.oc + g * s.ocg : nullptr);
        place_padded(tg, s.oh, s.ow, s.ocg, top, left, tx.hp, tx.wp, plane);
        if (need_gw) {
          pack_input(s, strided, a.x, n, g, tl.wp, xn, tmp);
          input_transform<W>(xn, tl, s.cg, v + g * pts * ps + i * T * s.cg, ps);
          grad_output_transform<W>(plane + (top * tx.wp + left) * s.ocg, tx.wp, tl, s.ocg,
                                    gh + g * pts * psg + i * T * s.ocg, psg);
        }
        if (need_gx)
          input_transform<W>(plane, tx, s.ocg, vx + g * pts * psx + i * TX * s.ocg, psx);
      }
    });

    const int64_t nw = need_gw ? G * pts : 0, nx = need_gx ? G * pts : 0;
    TaskQueue mul(s, nw + nx);
    at::parallel_for(0, mul.workers(), 1, [&](int64_t, int64_t) {
      for (int64_t task; mul.next(task);) {
        if (task < nw) {  // grad u[g][xi] (ocg x cg) (+)= Gh[xi]^T . V[xi]
          const int64_t g = task / pts, p = task % pts;
          gemm<float>(true, false, s.ocg, s.cg, nimg * T, gh + (g * pts + p) * psg, s.ocg,
                      v + (g * pts + p) * ps, s.cg, gu + g * upt + p * s.ocg * s.cg, s.cg,
                      n0 > 0);
        } else {  // Mx[g][xi] = Vx[xi] . Ux[xi]
          const int64_t g = (task - nw) / pts, p = (task - nw) % pts;
          gemm<float>(false, false, nimg * TX, s.cg, s.ocg, vx + (g * pts + p) * psx, s.ocg,
                      ux + g * upt + p * s.ocg * s.cg, s.cg, mx + (g * pts + p) * psm, s.cg,
                      false);
        }
      }
    });

    if (need_gx)
      output_phase<W>(s, tx, n0, nimg, s.cg, mx, psm, nullptr, Activation::Identity, a.gx);
  }

  if (need_gw) {  // gw = G^T (grad u) G for every (o, c)
    at::parallel_for(0, G * s.ocg, grain(s, G * s.ocg), [&](int64_t begin, int64_t end) {
      std::vector<float> tmp(taps * s.cg);
      for (int64_t go = begin; go < end; ++go) {
        const int64_t g = go / s.ocg, o = go % s.ocg;
        inverse_weight_transform<W>(gu + g * upt, s.cg, s.ocg, o, tmp.data(),
                                     a.gw + (g * s.ocg + o) * s.cg * taps);
      }
    });
  }
  if (a.gb) {
    for (int64_t oc = 0; oc < s.oc; ++oc) {
      float acc = 0;
      for (int64_t n = 0; n < s.n; ++n) acc += gbs[n * s.oc + oc];
      a.gb[oc] = acc;
    }
  }
}

}  // namespace

bool winograd_supported(const Conv2dShape& s) {
  const bool tile = s.kh == s.kw && (s.kh == 3 || s.kh == 5);
  return tile && s.sh == 1 && s.sw == 1 && s.ph < s.kh && s.pw < s.kw && s.cg >= 16 &&
         s.ocg >= 16 && s.oh >= 2 && s.ow >= 2;
}

// The larger tiles need fewer multiplications per output but waste more on
// outputs that are not a multiple of the tile, so small outputs keep 2x2
// tiles. On AlexNet's layers (13 x 13 and 27 x 27 outputs, batch 8) the larger
// tiles were faster everywhere: conv4 forward 8.1 against 9.8 ms, forward +
// backward 24.5 against 30.0 ms (medians of 20, interleaved).
template <typename F>
void with_tile(const Conv2dShape& s, F&& f) {
  const bool large = std::min(s.oh, s.ow) >= 6;
  if (s.kh == 3) return large ? f(F4x4_3x3()) : f(F2x2_3x3());
  return large ? f(F3x3_5x5()) : f(F2x2_5x5());
}

void forward_winograd(const Conv2dShape& s, const ConvArgs<float>& a, Activation act,
                      const Conv2dShape* strided) {
  with_tile(s, [&](auto w) { forward_tiles<decltype(w)>(s, a, act, strided); });
}

void backward_winograd(const Conv2dShape& s, const ConvArgs<float>& a, Activation act,
                       const Conv2dShape* strided) {
  with_tile(s, [&](auto w) { backward_tiles<decltype(w)>(s, a, act, strided); });
}

#else  // no AVX-512 (the transposes use it)

bool winograd_supported(const Conv2dShape&) { return false; }
void forward_winograd(const Conv2dShape&, const ConvArgs<float>&, Activation, const Conv2dShape*) {}
void backward_winograd(const Conv2dShape&, const ConvArgs<float>&, Activation,
                       const Conv2dShape*) {}

#endif

}  // namespace conv_cpu
}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
