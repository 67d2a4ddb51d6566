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

// v[xi][t][c] = (B^T d B)[xi] for every tile t of the plane xn ([hp][wp][ch]).
void input_transform(const float* xn, const Tiling& tl, int64_t ch, float* v) {
  const int64_t T = tl.tiles(), pt = T * ch;
  for (int64_t i = 0; i < tl.th; ++i)
    for (int64_t j = 0; j < tl.tw; ++j) {
      const int64_t t = i * tl.tw + j;
      const float* d = xn + (2 * i * tl.wp + 2 * j) * ch;
      const int64_t row = tl.wp * ch;
      float* out = v + t * ch;
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
          out[(a * 4 + 0) * pt + c] = r[a][0] - r[a][2];
          out[(a * 4 + 1) * pt + c] = r[a][1] + r[a][2];
          out[(a * 4 + 2) * pt + c] = r[a][2] - r[a][1];
          out[(a * 4 + 3) * pt + c] = r[a][1] - r[a][3];
        }
      }
    }
}

// u[xi][ci][co] = (G g G^T)[xi] with g[k] = wt[((ci - ci0)*9 + k)*cout + co]
// (k = 3*row + col), or with the kernel rotated by 180 degrees when flip; for
// ci in [ci0, ci1).
void weight_transform(const float* wt, int64_t cin, int64_t cout, bool flip, float* u,
                      int64_t ci0, int64_t ci1) {
  const int64_t pt = cin * cout;
  for (int64_t ci = ci0; ci < ci1; ++ci) {
    const float* src = wt + (ci - ci0) * 9 * cout;
    float* out = u + ci * cout;
#pragma omp simd
    for (int64_t co = 0; co < cout; ++co) {
      float g[3][3], r[4][3];
      for (int k = 0; k < 9; ++k) g[k / 3][k % 3] = src[(flip ? 8 - k : k) * cout + co];
      for (int b = 0; b < 3; ++b) {  // G g
        r[0][b] = g[0][b];
        r[1][b] = 0.5f * (g[0][b] + g[1][b] + g[2][b]);
        r[2][b] = 0.5f * (g[0][b] - g[1][b] + g[2][b]);
        r[3][b] = g[2][b];
      }
      for (int a = 0; a < 4; ++a) {  // (G g) G^T
        out[(a * 4 + 0) * pt + co] = r[a][0];
        out[(a * 4 + 1) * pt + co] = 0.5f * (r[a][0] + r[a][1] + r[a][2]);
        out[(a * 4 + 2) * pt + co] = 0.5f * (r[a][0] - r[a][1] + r[a][2]);
        out[(a * 4 + 3) * pt + co] = r[a][2];
      }
    }
  }
}

// yn[oh][ow][co] = act(A^T m A + bias) for every tile, m[xi][t][co]; only
// pixels inside oh x ow are written.
template <Activation A>
void output_transform(const float* m, const Tiling& tl, int64_t cout, const float* bias, float* yn) {
  const int64_t T = tl.tiles(), pt = T * cout;
  std::vector<float> zero(bias ? 0 : cout, 0.0f);
  const float* b = bias ? bias : zero.data();
  for (int64_t i = 0; i < tl.th; ++i)
    for (int64_t j = 0; j < tl.tw; ++j) {
      const float* in = m + (i * tl.tw + j) * cout;
      const bool right = 2 * j + 1 < tl.ow, bottom = 2 * i + 1 < tl.oh;
      float* y00 = yn + (2 * i * tl.ow + 2 * j) * cout;
      float* y10 = y00 + tl.ow * cout;
#pragma omp simd
      for (int64_t co = 0; co < cout; ++co) {
        float x[4][4], s[2][4];
        for (int p = 0; p < kPts; ++p) x[p / 4][p % 4] = in[p * pt + co];
        for (int c = 0; c < 4; ++c) {  // A^T m
          s[0][c] = x[0][c] + x[1][c] + x[2][c];
          s[1][c] = x[1][c] - x[2][c] - x[3][c];
        }
        const float o00 = s[0][0] + s[0][1] + s[0][2], o01 = s[0][1] - s[0][2] - s[0][3];
        const float o10 = s[1][0] + s[1][1] + s[1][2], o11 = s[1][1] - s[1][2] - s[1][3];
        y00[co] = activation_forward<float>(A, o00 + b[co]);
        if (right) y00[cout + co] = activation_forward<float>(A, o01 + b[co]);
        if (bottom) {
          y10[co] = activation_forward<float>(A, o10 + b[co]);
          if (right) y10[cout + co] = activation_forward<float>(A, o11 + b[co]);
        }
      }
    }
}

// gh[xi][t][co] = (A p A^T)[xi] for the 2x2 block p of gpre at each tile; gp is
// a channels-last plane with rows wp*ch apart whose pixels past the output
// are zero.
void grad_output_transform(const float* gp, int64_t wp, const Tiling& tl, int64_t ch, float* gh) {
  const int64_t T = tl.tiles(), pt = T * ch, row = wp * ch;
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
          out[(a * 4 + 0) * pt + c] = h[a][0];
          out[(a * 4 + 1) * pt + c] = h[a][0] + h[a][1];
          out[(a * 4 + 2) * pt + c] = h[a][0] - h[a][1];
          out[(a * 4 + 3) * pt + c] = -h[a][1];
        }
      }
    }
}

// Scratch of n floats; zeroed only where a zero border must stay zero.
float* buffer(at::Tensor& holder, int64_t n, bool zero = false) {
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  holder = zero ? at::zeros({n}, opts) : at::empty({n}, opts);
  return holder.mutable_data_ptr<float>();
}

// Channels-last, zero-padded plane of one image's group: plane[top + ih][left + iw][c]
// = src[c][ih][iw] (src: ch planes of h*w, hw apart). Only the interior is written.
void pack_plane(const float* src, int64_t ch, int64_t h, int64_t w, int64_t top, int64_t left,
                int64_t wp, float* plane, float* tmp) {
  simd::transpose(src, h * w, ch, h * w, tmp, ch);
  for (int64_t ih = 0; ih < h; ++ih)
    std::memcpy(plane + ((top + ih) * wp + left) * ch, tmp + ih * w * ch, w * ch * sizeof(float));
}

// The forward of one Winograd convolution of an image's packed plane xn
// (cin channels) into yn ([oh][ow][cout], activation applied), given u.
template <Activation A>
void conv_image(const float* xn, const Tiling& tl, int64_t cin, int64_t cout, const float* u,
                const float* bias, float* v, float* m, float* yn) {
  const int64_t T = tl.tiles();
  input_transform(xn, tl, cin, v);
  for (int p = 0; p < kPts; ++p)
    gemm<float>(false, false, T, cout, cin, v + p * T * cin, cin, u + p * cin * cout, cout,
                m + p * T * cout, cout, false);
  output_transform<A>(m, tl, cout, bias, yn);
}

}  // namespace

bool winograd_supported(const Conv2dShape& s) {
  return s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.ph <= 2 && s.pw <= 2 &&
         s.cg >= 16 && s.ocg >= 16 && s.oh >= 2 && s.ow >= 2;
}

void forward_winograd(const Conv2dShape& s, const ConvArgs<float>& a, Activation act) {
  const Tiling tl = tiling(s.oh, s.ow);
  const int64_t T = tl.tiles(), P = s.oh * s.ow, K9 = s.cg * 9;
  // u[g][xi][c][o], from W transposed to [(c, k)][o], in blocks of input channels.
  const int64_t upt = kPts * s.cg * s.ocg, cblk = 16, ncb = (s.cg + cblk - 1) / cblk;
  at::Tensor u_hold = at::empty({s.groups * upt}, at::TensorOptions().dtype(at::kFloat));
  float* u = u_hold.mutable_data_ptr<float>();
  at::parallel_for(0, s.groups * ncb, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> wt(cblk * 9 * s.ocg);
    for (int64_t gb = begin; gb < end; ++gb) {
      const int64_t g = gb / ncb, c0 = gb % ncb * cblk, c1 = std::min(s.cg, c0 + cblk);
      simd::transpose(a.w + g * s.ocg * K9 + c0 * 9, K9, s.ocg, (c1 - c0) * 9, wt.data(), s.ocg);
      weight_transform(wt.data(), s.cg, s.ocg, false, u + g * upt, c0, c1);
    }
  });
  at::parallel_for(0, s.n * s.groups, 1, [&](int64_t begin, int64_t end) {
    at::Tensor xn_b, tmp_b, v_b, m_b, yn_b;
    float* xn = buffer(xn_b, tl.hp * tl.wp * s.cg, true);  // zero border, interior rewritten
    float* tmp = buffer(tmp_b, s.h * s.w * s.cg);
    float* v = buffer(v_b, kPts * T * s.cg);
    float* m = buffer(m_b, kPts * T * s.ocg);
    float* yn = buffer(yn_b, P * s.ocg);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / s.groups, g = task % s.groups;
      pack_plane(a.x + (n * s.c + g * s.cg) * s.h * s.w, s.cg, s.h, s.w, s.ph, s.pw, tl.wp, xn,
                 tmp);
      with_activation(act, [&](auto A) {
        conv_image<decltype(A)::value>(xn, tl, s.cg, s.ocg, u + g * upt,
                                       a.b ? a.b + g * s.ocg : nullptr, v, m, yn);
      });
      simd::transpose(yn, s.ocg, P, s.ocg, a.y + (n * s.oc + g * s.ocg) * P, P);
    }
  });
}

void backward_winograd(const Conv2dShape& s, const ConvArgs<float>& a, Activation act) {
  const Tiling tl = tiling(s.oh, s.ow);     // forward tiles (grad_weight)
  const Tiling tx = tiling(s.h, s.w);       // grad_input tiles
  const int64_t P = s.oh * s.ow, HW = s.h * s.w, K9 = s.cg * 9;
  const int64_t top = 2 - s.ph, left = 2 - s.pw;  // gpre's place in its padded plane
  const bool need_gx = a.gx != nullptr, need_gw = a.gw != nullptr;
  const int64_t upt = kPts * s.cg * s.ocg;  // per group, u and grad u

  // grad_input's weights: the kernel rotated, input and output channels swapped.
  at::Tensor ux_hold;
  float* ux = nullptr;
  if (need_gx) {
    ux_hold = at::empty({s.groups * upt}, at::TensorOptions().dtype(at::kFloat));
    ux = ux_hold.mutable_data_ptr<float>();
    const int64_t oblk = 16, nob = (s.ocg + oblk - 1) / oblk;
    at::parallel_for(0, s.groups * nob, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> wt(oblk * 9 * s.cg);
      for (int64_t gb = begin; gb < end; ++gb) {
        const int64_t g = gb / nob, o0 = gb % nob * oblk, o1 = std::min(s.ocg, o0 + oblk);
        for (int64_t o = o0; o < o1; ++o)  // wt[(o*9 + k)][c] = W[o][c][k]
          simd::transpose(a.w + (g * s.ocg + o) * K9, 9, s.cg, 9,
                          wt.data() + (o - o0) * 9 * s.cg, s.cg);
        weight_transform(wt.data(), s.ocg, s.cg, true, ux + g * upt, o0, o1);
      }
    });
  }

  const int64_t tasks = s.n * s.groups;
  const int64_t slots = std::min<int64_t>(tasks, std::max(1, at::get_num_threads()));
  at::Tensor gu_hold, gbs_hold;  // per slot: grad u [g][xi][c][o], grad bias
  float* gu = need_gw ? buffer(gu_hold, slots * s.groups * upt, true) : nullptr;
  float* gbs = a.gb ? buffer(gbs_hold, slots * s.oc, true) : nullptr;

  at::parallel_for(0, slots, 1, [&](int64_t slot_begin, int64_t slot_end) {
    at::Tensor gq_b, tg_b, ty_b, xn_b, tmp_b, v_b, gh_b, vx_b, mx_b, gxn_b;
    float* gq = buffer(gq_b, tx.hp * tx.wp * s.ocg, true);  // gpre, padded for grad_input
    float* tg = buffer(tg_b, P * s.ocg);
    float* ty = buffer(ty_b, P * s.ocg);
    float *xn = nullptr, *tmp = nullptr, *v = nullptr, *gh = nullptr;
    if (need_gw) {
      xn = buffer(xn_b, tl.hp * tl.wp * s.cg, true);
      tmp = buffer(tmp_b, HW * s.cg);
      v = buffer(v_b, kPts * tl.tiles() * s.cg);
      gh = buffer(gh_b, kPts * tl.tiles() * s.ocg);
    }
    float *vx = nullptr, *mx = nullptr, *gxn = nullptr;
    if (need_gx) {
      vx = buffer(vx_b, kPts * tx.tiles() * s.ocg);
      mx = buffer(mx_b, kPts * tx.tiles() * s.cg);
      gxn = buffer(gxn_b, HW * s.cg);
    }
    for (int64_t slot = slot_begin; slot < slot_end; ++slot) {
      const int64_t task_begin = tasks * slot / slots, task_end = tasks * (slot + 1) / slots;
      for (int64_t task = task_begin; task < task_end; ++task) {
        const int64_t n = task / s.groups, g = task % s.groups;
        // Prologue: gpre = grad_output * act'(output), channels-last, into its padded plane.
        const int64_t off = (n * s.oc + g * s.ocg) * P;
        simd::transpose(a.gy + off, P, s.ocg, P, tg, s.ocg);
        simd::transpose(a.yo + off, P, s.ocg, P, ty, s.ocg);
        with_activation(act, [&](auto A) {
          grad_pre_row<decltype(A)::value, float>(tg, ty, tg, P * s.ocg);
        });
        if (a.gb) {
          float* acc = gbs + slot * s.oc + g * s.ocg;
          for (int64_t q = 0; q < P; ++q)
            for (int64_t o = 0; o < s.ocg; ++o) acc[o] += tg[q * s.ocg + o];
        }
        for (int64_t oh = 0; oh < s.oh; ++oh)
          std::memcpy(gq + ((top + oh) * tx.wp + left) * s.ocg, tg + oh * s.ow * s.ocg,
                      s.ow * s.ocg * sizeof(float));
        if (need_gw) {
          pack_plane(a.x + (n * s.c + g * s.cg) * HW, s.cg, s.h, s.w, s.ph, s.pw, tl.wp, xn, tmp);
          input_transform(xn, tl, s.cg, v);
          grad_output_transform(gq + (top * tx.wp + left) * s.ocg, tx.wp, tl, s.ocg, gh);
          float* part = gu + (slot * s.groups + g) * upt;
          const int64_t T = tl.tiles();
          for (int p = 0; p < kPts; ++p)  // grad u[xi] (cg x ocg) += V[xi]^T . Gh[xi]
            gemm<float>(true, false, s.cg, s.ocg, T, v + p * T * s.cg, s.cg, gh + p * T * s.ocg,
                        s.ocg, part + p * s.cg * s.ocg, s.ocg, true);
        }
        if (need_gx) {
          conv_image<Activation::Identity>(gq, tx, s.ocg, s.cg, ux + g * upt, nullptr, vx,
                                           mx, gxn);
          simd::transpose(gxn, s.cg, HW, s.cg, a.gx + (n * s.c + g * s.cg) * HW, HW);
        }
      }
    }
  });

  if (need_gw) {  // sum the slots, then gw = G^T (grad u) G for every (o, c)
    at::parallel_for(0, s.groups * s.cg, 1, [&](int64_t begin, int64_t end) {
      for (int64_t gc = begin; gc < end; ++gc) {
        const int64_t g = gc / s.cg, c = gc % s.cg;
#pragma omp simd
        for (int64_t o = 0; o < s.ocg; ++o) {
          float x[4][4];
          for (int p = 0; p < kPts; ++p) {
            float acc = 0;
            for (int64_t sl = 0; sl < slots; ++sl)
              acc += gu[(sl * s.groups + g) * upt + (p * s.cg + c) * s.ocg + o];
            x[p / 4][p % 4] = acc;
          }
          float q[3][4];
          for (int b = 0; b < 4; ++b) {  // G^T X
            q[0][b] = x[0][b] + 0.5f * (x[1][b] + x[2][b]);
            q[1][b] = 0.5f * (x[1][b] - x[2][b]);
            q[2][b] = 0.5f * (x[1][b] + x[2][b]) + x[3][b];
          }
          float* out = a.gw + ((g * s.ocg + o) * s.cg + c) * 9;
          for (int r = 0; r < 3; ++r) {  // (G^T X) G
            out[r * 3 + 0] = q[r][0] + 0.5f * (q[r][1] + q[r][2]);
            out[r * 3 + 1] = 0.5f * (q[r][1] - q[r][2]);
            out[r * 3 + 2] = 0.5f * (q[r][1] + q[r][2]) + q[r][3];
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
