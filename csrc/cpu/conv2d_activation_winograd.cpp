// conv2d_activation on the CPU, Winograd path (float32): 3x3 kernels, stride 1,
// many channels (AlexNet's conv3-5).
//
// Winograd F(2x2, 3x3) computes each 2x2 output tile from a 4x4 input tile d:
//   y = A^T [ (G g G^T) . (B^T d B) ] A        (. elementwise over 16 points)
// so per tile and channel pair it needs 16 multiplications instead of 36. Over
// all channels the 16 points become 16 independent matrix products,
//   M[xi] (tiles x out) = V[xi] (tiles x in) . U[xi] (in x out),
// done by ATen's GEMM (MKL); the transforms are cheap passes vectorized over
// channels. The output transform applies bias and activation to the tile
// while it is hot. All transforms use coefficients 0, +-1, +-1/2, so the
// rounding error stays that of a direct float32 convolution.
// Backward:
//   grad_input  = a Winograd convolution of gpre (padded by 2 - padding) with
//                 the weights rotated 180 degrees and transposed;
//   grad_weight = G^T [ sum over tiles of (A gpre_tile A^T) . (B^T d B) ] G:
//                 16 GEMMs V[xi]^T . Gpre[xi] accumulated per slot, then the
//                 inverse weight transform;
//   gpre = grad_output * act'(output), built once per task from the saved output.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <cstring>
#include <vector>

#include "cpu/conv2d_activation_cpu.h"
#include "cpu/conv2d_activation_simd.h"

namespace lenetalex {
namespace conv_cpu {

#if LENETALEX_CONV_SIMD
namespace {

constexpr int kPts = 16;  // 4x4 Winograd points

// Tiles over an oh x ow output, read from a zero-padded channels-last plane of
// (2*th + 2) x (2*tw + 2) pixels: tile (i, j) reads rows 2i..2i+3, cols 2j..2j+3.
struct Tiling {
  int64_t oh, ow, th, tw, hp, wp;
  int64_t tiles() const { return th * tw; }
};

Tiling tiling(int64_t oh, int64_t ow) {
  const int64_t th = (oh + 1) / 2, tw = (ow + 1) / 2;
  return {oh, ow, th, tw, 2 * th + 2, 2 * tw + 2};
}

// The transforms below work on one image and vectorize over channels. Their
// Winograd-domain side is laid out [point][tile][channel] with `ps` floats
// between points, so that several images' tiles stack into one GEMM.

// v[xi][t][c] = (B^T d B)[xi] for every tile t of the plane xn ([hp][wp][ch]).
void input_transform(const float* xn, const Tiling& tl, int64_t ch, float* v, int64_t ps) {
  const int64_t row = tl.wp * ch;
  for (int64_t i = 0; i < tl.th; ++i)
    for (int64_t j = 0; j < tl.tw; ++j) {
      const float* d = xn + (2 * i * tl.wp + 2 * j) * ch;
      float* out = v + (i * tl.tw + j) * ch;
#pragma omp simd
      for (int64_t c = 0; c < ch; ++c) {
        float x[4][4], r[4][4];
        for (int a = 0; a < 4; ++a)
          for (int b = 0; b < 4; ++b) x[a][b] = d[a * row + b * ch + c];
        for (int b = 0; b < 4; ++b) {  // B^T d
          r[0][b] = x[0][b] - x[2][b];
          r[1][b] = x[1][b] + x[2][b];
          r[2][b] = x[2][b] - x[1][b];
          r[3][b] = x[1][b] - x[3][b];
        }
        for (int a = 0; a < 4; ++a) {  // (B^T d) B
          out[(a * 4 + 0) * ps + c] = r[a][0] - r[a][2];
          out[(a * 4 + 1) * ps + c] = r[a][1] + r[a][2];
          out[(a * 4 + 2) * ps + c] = r[a][2] - r[a][1];
          out[(a * 4 + 3) * ps + c] = r[a][1] - r[a][3];
        }
      }
    }
}

// yn[oh][ow][co] = act(A^T m A + bias) for every tile; only pixels inside the
// output are written.
template <Activation A>
LENETALEX_WIDE_VECTORS void output_transform(const float* m, const Tiling& tl, int64_t cout,
                                             int64_t ps, const float* bias, float* yn) {
  std::vector<float> zero(bias ? 0 : cout, 0.0f);
  const float* b = bias ? bias : zero.data();
  for (int64_t i = 0; i < tl.th; ++i)
    for (int64_t j = 0; j < tl.tw; ++j) {
      const float* in = m + (i * tl.tw + j) * cout;
      const bool right = 2 * j + 1 < tl.ow, bottom = 2 * i + 1 < tl.oh;
      float* y00 = yn + (2 * i * tl.ow + 2 * j) * cout;
      float* y01 = right ? y00 + cout : y00;  // a pixel past the edge rewrites y00 first
      float* y10 = bottom ? y00 + tl.ow * cout : y00;
      float* y11 = bottom ? y01 + tl.ow * cout : y01;
#pragma omp simd
      for (int64_t co = 0; co < cout; ++co) {
        float x[4][4], s[2][4];
        for (int p = 0; p < kPts; ++p) x[p / 4][p % 4] = in[p * ps + co];
        for (int c = 0; c < 4; ++c) {  // A^T m
          s[0][c] = x[0][c] + x[1][c] + x[2][c];
          s[1][c] = x[1][c] - x[2][c] - x[3][c];
        }
        const float o00 = s[0][0] + s[0][1] + s[0][2], o01 = s[0][1] - s[0][2] - s[0][3];
        const float o10 = s[1][0] + s[1][1] + s[1][2], o11 = s[1][1] - s[1][2] - s[1][3];
        // Stores in reverse order so that an aliased (past-the-edge) pixel
        // is overwritten by the real one.
        y11[co] = activation_forward<float>(A, o11 + b[co]);
        y10[co] = activation_forward<float>(A, o10 + b[co]);
        y01[co] = activation_forward<float>(A, o01 + b[co]);
        y00[co] = activation_forward<float>(A, o00 + b[co]);
      }
    }
}

// gh[xi][t][co] = (A p A^T)[xi] for the 2x2 block p of gpre at each tile; gp is
// a channels-last plane, rows wp*ch apart, zero past the output.
void grad_output_transform(const float* gp, int64_t wp, const Tiling& tl, int64_t ch, float* gh,
                           int64_t ps) {
  const int64_t row = wp * ch;
  for (int64_t i = 0; i < tl.th; ++i)
    for (int64_t j = 0; j < tl.tw; ++j) {
      const float* p = gp + (2 * i * wp + 2 * j) * ch;
      float* out = gh + (i * tl.tw + j) * ch;
#pragma omp simd
      for (int64_t c = 0; c < ch; ++c) {
        const float p00 = p[c], p01 = p[ch + c], p10 = p[row + c], p11 = p[row + ch + c];
        const float h[4][2] = {{p00, p01}, {p00 + p10, p01 + p11}, {p00 - p10, p01 - p11},
                               {-p10, -p11}};  // A p
        for (int a = 0; a < 4; ++a) {         // (A p) A^T
          out[(a * 4 + 0) * ps + c] = h[a][0];
          out[(a * 4 + 1) * ps + c] = h[a][0] + h[a][1];
          out[(a * 4 + 2) * ps + c] = h[a][0] - h[a][1];
          out[(a * 4 + 3) * ps + c] = -h[a][1];
        }
      }
    }
}

// The 16 points of G g G^T for one 3x3 kernel, g[row][col] = load(3*row + col),
// written out[xi * ps]. (A loader, not an array argument, keeps the caller's
// loop vectorizable.)
template <typename Load>
inline void kernel_transform(Load load, float* out, int64_t ps) {
  float r[4][3];
  for (int b = 0; b < 3; ++b) {  // G g
    const float g0 = load(b), g1 = load(3 + b), g2 = load(6 + b);
    r[0][b] = g0;
    r[1][b] = 0.5f * (g0 + g1 + g2);
    r[2][b] = 0.5f * (g0 - g1 + g2);
    r[3][b] = g2;
  }
  for (int a = 0; a < 4; ++a) {  // (G g) G^T
    out[(a * 4 + 0) * ps] = r[a][0];
    out[(a * 4 + 1) * ps] = 0.5f * (r[a][0] + r[a][1] + r[a][2]);
    out[(a * 4 + 2) * ps] = 0.5f * (r[a][0] - r[a][1] + r[a][2]);
    out[(a * 4 + 3) * ps] = r[a][2];
  }
}

// Forward weights: u[xi][c][o] for c in [c0, c1), from wt[((c - c0)*9 + k)][o]
// (the block of W transposed).
void weight_transform(const float* wt, int64_t cg, int64_t ocg, int64_t c0, int64_t c1, float* u) {
  for (int64_t c = c0; c < c1; ++c) {
    const float* src = wt + (c - c0) * 9 * ocg;
#pragma omp simd
    for (int64_t o = 0; o < ocg; ++o)
      kernel_transform([&](int k) { return src[k * ocg + o]; }, u + c * ocg + o, cg * ocg);
  }
}

// grad_input weights: u[xi][o][c] from W[o][c] rotated by 180 degrees, o in [o0, o1).
// Each W[o] ([c][9]) is first transposed to tmp[9][c], so the transform reads along c.
void weight_transform_flipped(const float* w, int64_t cg, int64_t ocg, int64_t o0, int64_t o1,
                              float* u) {
  std::vector<float> tmp(9 * cg);
  for (int64_t o = o0; o < o1; ++o) {
    const float* src = w + o * cg * 9;
    for (int64_t c = 0; c < cg; ++c)
      for (int k = 0; k < 9; ++k) tmp[(8 - k) * cg + c] = src[c * 9 + k];
    const float* t = tmp.data();
#pragma omp simd
    for (int64_t c = 0; c < cg; ++c)
      kernel_transform([&](int k) { return t[k * cg + c]; }, u + o * cg + c, cg * ocg);
  }
}

float* buffer(at::Tensor& holder, int64_t n, bool zero = false) {
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  holder = zero ? at::zeros({n}, opts) : at::empty({n}, opts);
  return holder.mutable_data_ptr<float>();
}

// Channels-last, zero-padded plane of one image's group: plane[top + ih][left + iw][c]
// = src[c][ih][iw] (src: ch planes of h*w). Only the interior is written.
void pack_plane(const float* src, int64_t ch, int64_t h, int64_t w, int64_t top, int64_t left,
                int64_t wp, float* plane, float* tmp) {
  simd::transpose(src, h * w, ch, h * w, tmp, ch);
  for (int64_t ih = 0; ih < h; ++ih)
    std::memcpy(plane + ((top + ih) * wp + left) * ch, tmp + ih * w * ch, w * ch * sizeof(float));
}

// Images per task: enough rows for efficient GEMMs and few passes over the
// Winograd-domain weights, within a scratch budget, and at least one task per thread.
// MKL packs the weight operand on every call, so rows are what amortize it:
// at 2 images (98 rows) on AlexNet conv3 the packing took a third as long as
// the products, at 4 images a quarter of that share (perf samples).
int64_t images_per_task(int64_t n, int64_t groups, int64_t bytes_per_image, int64_t budget_mib) {
  const int64_t threads = std::max(1, at::get_num_threads());
  const int64_t budget = std::max<int64_t>(1, (budget_mib << 20) / bytes_per_image);
  const int64_t per_thread = std::max<int64_t>(1, (n * groups + threads - 1) / threads / groups);
  return std::clamp<int64_t>(std::min(budget, per_thread), 1, std::max<int64_t>(1, n));
}

}  // namespace

bool winograd_supported(const Conv2dShape& s) {
  return s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.ph <= 2 && s.pw <= 2 &&
         s.cg >= 16 && s.ocg >= 16 && s.oh >= 2 && s.ow >= 2;
}

void forward_winograd(const Conv2dShape& s, const ConvArgs<float>& a, Activation act) {
  const Tiling tl = tiling(s.oh, s.ow);
  const int64_t T = tl.tiles(), P = s.oh * s.ow, K9 = s.cg * 9;
  const int64_t upt = kPts * s.cg * s.ocg, cblk = 16, ncb = (s.cg + cblk - 1) / cblk;
  // u[g][xi][c][o], from blocks of W transposed to [(c, k)][o].
  at::Tensor u_hold;
  float* u = buffer(u_hold, s.groups * upt);
  at::parallel_for(0, s.groups * ncb, grain(s, s.groups * ncb), [&](int64_t begin, int64_t end) {
    std::vector<float> wt(cblk * 9 * s.ocg);
    for (int64_t gb = begin; gb < end; ++gb) {
      const int64_t g = gb / ncb, c0 = gb % ncb * cblk, c1 = std::min(s.cg, c0 + cblk);
      simd::transpose(a.w + g * s.ocg * K9 + c0 * 9, K9, s.ocg, (c1 - c0) * 9, wt.data(), s.ocg);
      weight_transform(wt.data(), s.cg, s.ocg, c0, c1, u + g * upt);
    }
  });
  const int64_t imgs = images_per_task(s.n, s.groups, kPts * T * (s.cg + s.ocg) * 4, 16);
  const int64_t chunks = (s.n + imgs - 1) / imgs;
  at::parallel_for(0, chunks * s.groups, grain(s, chunks * s.groups),
                   [&](int64_t begin, int64_t end) {
    at::Tensor xn_b, tmp_b, v_b, m_b, yn_b;
    float* xn = buffer(xn_b, tl.hp * tl.wp * s.cg, true);  // zero border, interior rewritten
    float* tmp = buffer(tmp_b, s.h * s.w * s.cg);
    float* v = buffer(v_b, kPts * imgs * T * s.cg);
    float* m = buffer(m_b, kPts * imgs * T * s.ocg);
    float* yn = buffer(yn_b, P * s.ocg);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t g = task % s.groups, n0 = task / s.groups * imgs;
      const int64_t nimg = std::min(imgs, s.n - n0), rows = nimg * T;
      for (int64_t i = 0; i < nimg; ++i) {
        pack_plane(a.x + ((n0 + i) * s.c + g * s.cg) * s.h * s.w, s.cg, s.h, s.w, s.ph, s.pw,
                   tl.wp, xn, tmp);
        input_transform(xn, tl, s.cg, v + i * T * s.cg, rows * s.cg);
      }
      for (int p = 0; p < kPts; ++p)  // M[xi] = V[xi] . U[xi]
        gemm<float>(false, false, rows, s.ocg, s.cg, v + p * rows * s.cg, s.cg,
                    u + g * upt + p * s.cg * s.ocg, s.ocg, m + p * rows * s.ocg, s.ocg, false);
      for (int64_t i = 0; i < nimg; ++i) {
        with_activation(act, [&](auto A) {
          output_transform<decltype(A)::value>(m + i * T * s.ocg, tl, s.ocg, rows * s.ocg,
                                               a.b ? a.b + g * s.ocg : nullptr, yn);
        });
        simd::transpose(yn, s.ocg, P, s.ocg, a.y + ((n0 + i) * s.oc + g * s.ocg) * P, P);
      }
    }
  });
}

void backward_winograd(const Conv2dShape& s, const ConvArgs<float>& a, Activation act) {
  const Tiling tl = tiling(s.oh, s.ow);  // forward tiles (grad_weight)
  const Tiling tx = tiling(s.h, s.w);    // grad_input tiles
  const int64_t P = s.oh * s.ow, HW = s.h * s.w, T = tl.tiles(), TX = tx.tiles();
  const int64_t top = 2 - s.ph, left = 2 - s.pw;  // gpre's place in its padded plane
  const int64_t gplane = tx.hp * tx.wp * s.ocg;
  const bool need_gx = a.gx != nullptr, need_gw = a.gw != nullptr;
  const int64_t upt = kPts * s.cg * s.ocg;  // per group: u, grad u

  // grad_input's weights: ux[g][xi][o][c], the kernel rotated, channels swapped.
  at::Tensor ux_hold;
  float* ux = nullptr;
  if (need_gx) {
    ux = buffer(ux_hold, s.groups * upt);
    const int64_t oblk = 16, nob = (s.ocg + oblk - 1) / oblk;
    at::parallel_for(0, s.groups * nob, grain(s, s.groups * nob), [&](int64_t begin, int64_t end) {
      for (int64_t gb = begin; gb < end; ++gb) {
        const int64_t g = gb / nob, o0 = gb % nob * oblk, o1 = std::min(s.ocg, o0 + oblk);
        weight_transform_flipped(a.w + g * s.ocg * s.cg * 9, s.cg, s.ocg, o0, o1, ux + g * upt);
      }
    });
  }

  const int64_t per_image = gplane + (need_gw ? kPts * T * (s.cg + s.ocg) : 0) +
                            (need_gx ? kPts * TX * (s.cg + s.ocg) : 0);
  const int64_t imgs = images_per_task(s.n, s.groups, per_image * 4, 24);
  const int64_t chunks = (s.n + imgs - 1) / imgs, tasks = chunks * s.groups;
  const int64_t slots = slots_for(s, tasks);
  // Per slot: grad u as [g][xi][o][c] (so the inverse transform reads along c), grad bias.
  at::Tensor gu_hold, gbs_hold;
  float* gu = need_gw ? buffer(gu_hold, slots * s.groups * upt, true) : nullptr;
  float* gbs = a.gb ? buffer(gbs_hold, slots * s.oc, true) : nullptr;

  at::parallel_for(0, slots, grain(s, slots), [&](int64_t slot_begin, int64_t slot_end) {
    at::Tensor gq_b, tg_b, ty_b, xn_b, tmp_b, v_b, gh_b, vx_b, mx_b, gxn_b;
    float* gq = buffer(gq_b, imgs * gplane, true);  // gpre per image, padded for grad_input
    float* tg = buffer(tg_b, P * s.ocg);
    float* ty = buffer(ty_b, P * s.ocg);
    float *xn = nullptr, *tmp = nullptr, *v = nullptr, *gh = nullptr;
    if (need_gw) {
      xn = buffer(xn_b, tl.hp * tl.wp * s.cg, true);
      tmp = buffer(tmp_b, HW * s.cg);
      v = buffer(v_b, kPts * imgs * T * s.cg);
      gh = buffer(gh_b, kPts * imgs * T * s.ocg);
    }
    float *vx = nullptr, *mx = nullptr, *gxn = nullptr;
    if (need_gx) {
      vx = buffer(vx_b, kPts * imgs * TX * s.ocg);
      mx = buffer(mx_b, kPts * imgs * TX * s.cg);
      gxn = buffer(gxn_b, HW * s.cg);
    }
    for (int64_t slot = slot_begin; slot < slot_end; ++slot) {
      const int64_t task_begin = tasks * slot / slots, task_end = tasks * (slot + 1) / slots;
      for (int64_t task = task_begin; task < task_end; ++task) {
        const int64_t g = task % s.groups, n0 = task / s.groups * imgs;
        const int64_t nimg = std::min(imgs, s.n - n0), rows = nimg * T, rows_x = nimg * TX;
        for (int64_t i = 0; i < nimg; ++i) {
          // Prologue: gpre = grad_output * act'(output), channels-last, into its padded plane.
          const int64_t n = n0 + i, off = (n * s.oc + g * s.ocg) * P;
          float* plane = gq + i * gplane;
          simd::transpose(a.gy + off, P, s.ocg, P, tg, s.ocg);
          simd::transpose(a.yo + off, P, s.ocg, P, ty, s.ocg);
          with_activation(act, [&](auto A) {
            grad_pre_row<decltype(A)::value, float>(tg, ty, tg, P * s.ocg);
          });
          if (gbs) {
            float* acc = gbs + slot * s.oc + g * s.ocg;
            for (int64_t q = 0; q < P; ++q)
#pragma omp simd
              for (int64_t o = 0; o < s.ocg; ++o) acc[o] += tg[q * s.ocg + o];
          }
          for (int64_t oh = 0; oh < s.oh; ++oh)
            std::memcpy(plane + ((top + oh) * tx.wp + left) * s.ocg, tg + oh * s.ow * s.ocg,
                        s.ow * s.ocg * sizeof(float));
          if (need_gw) {
            pack_plane(a.x + (n * s.c + g * s.cg) * HW, s.cg, s.h, s.w, s.ph, s.pw, tl.wp, xn, tmp);
            input_transform(xn, tl, s.cg, v + i * T * s.cg, rows * s.cg);
            grad_output_transform(plane + (top * tx.wp + left) * s.ocg, tx.wp, tl, s.ocg,
                                  gh + i * T * s.ocg, rows * s.ocg);
          }
          if (need_gx) input_transform(plane, tx, s.ocg, vx + i * TX * s.ocg, rows_x * s.ocg);
        }
        if (need_gw) {
          float* part = gu + (slot * s.groups + g) * upt;
          for (int p = 0; p < kPts; ++p)  // grad u[xi] (ocg x cg) += Gh[xi]^T . V[xi]
            gemm<float>(true, false, s.ocg, s.cg, rows, gh + p * rows * s.ocg, s.ocg,
                        v + p * rows * s.cg, s.cg, part + p * s.ocg * s.cg, s.cg, true);
        }
        if (need_gx) {
          for (int p = 0; p < kPts; ++p)  // Mx[xi] = Vx[xi] . Ux[xi]
            gemm<float>(false, false, rows_x, s.cg, s.ocg, vx + p * rows_x * s.ocg, s.ocg,
                        ux + g * upt + p * s.ocg * s.cg, s.cg, mx + p * rows_x * s.cg, s.cg,
                        false);
          for (int64_t i = 0; i < nimg; ++i) {
            output_transform<Activation::Identity>(mx + i * TX * s.cg, tx, s.cg, rows_x * s.cg,
                                                   nullptr, gxn);
            simd::transpose(gxn, s.cg, HW, s.cg, a.gx + ((n0 + i) * s.c + g * s.cg) * HW, HW);
          }
        }
      }
    }
  });

  if (need_gw) {  // sum the slots into slot 0, then gw = G^T (grad u) G for every (o, c)
    for (int64_t sl = 1; sl < slots; ++sl) {
      const float* src = gu + sl * s.groups * upt;
      at::parallel_for(0, s.groups * upt, grain(s, s.groups * upt, 1 << 14),
                       [&](int64_t begin, int64_t end) {
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) gu[i] += src[i];
      });
    }
    at::parallel_for(0, s.groups * s.ocg, grain(s, s.groups * s.ocg),
                     [&](int64_t begin, int64_t end) {
      for (int64_t go = begin; go < end; ++go) {
        const int64_t g = go / s.ocg, o = go % s.ocg;
        const float* x0 = gu + g * upt + o * s.cg;
        float* out = a.gw + (g * s.ocg + o) * s.cg * 9;
        for (int64_t c = 0; c < s.cg; ++c) {
          float x[4][4], q[3][4];
          for (int p = 0; p < kPts; ++p) x[p / 4][p % 4] = x0[p * s.cg * s.ocg + c];
          for (int b = 0; b < 4; ++b) {  // G^T X
            q[0][b] = x[0][b] + 0.5f * (x[1][b] + x[2][b]);
            q[1][b] = 0.5f * (x[1][b] - x[2][b]);
            q[2][b] = 0.5f * (x[1][b] + x[2][b]) + x[3][b];
          }
          for (int r = 0; r < 3; ++r) {  // (G^T X) G
            out[c * 9 + r * 3 + 0] = q[r][0] + 0.5f * (q[r][1] + q[r][2]);
            out[c * 9 + r * 3 + 1] = 0.5f * (q[r][1] - q[r][2]);
            out[c * 9 + r * 3 + 2] = 0.5f * (q[r][1] + q[r][2]) + q[r][3];
          }
        }
      }
    });
  }
  if (a.gb) {
    for (int64_t oc = 0; oc < s.oc; ++oc) {
      float acc = 0;
      for (int64_t sl = 0; sl < slots; ++sl) acc += gbs[sl * s.oc + oc];
      a.gb[oc] = acc;
    }
  }
}

#else  // no AVX-512 (the transposes use it)

bool winograd_supported(const Conv2dShape&) { return false; }
void forward_winograd(const Conv2dShape&, const ConvArgs<float>&, Activation) {}
void backward_winograd(const Conv2dShape&, const ConvArgs<float>&, Activation) {}

#endif

}  // namespace conv_cpu
}  // namespace lenetalex
