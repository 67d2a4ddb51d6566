// conv2d_activation on the CPU, polyphase path (float32): a strided
// convolution whose kernel spans three strides (AlexNet's conv1, 11x11 at
// stride 4) as a stride-1 3x3 convolution, which the Winograd path then takes.
//
// Split the padded input into its s_h x s_w phases, phase (py, px) holding
// the pixels (i*s_h + py, j*s_w + px); a channel c becomes the s_h*s_w
// channels (c, py, px). Output (i, j) reads input rows i*s_h + ky, and with
// ky = a*s_h + py that is row i + a of phase py: so
//   y = conv_stride1(phases(x), w'),  w'[o][(c, py, px)][a][b] = w[o][c][a*s_h + py][b*s_w + px]
// (zero where a*s + p falls past the kernel). For conv1 that is 48 channels of
// 57 x 57 into a 3x3 kernel: F(4x4, 3x3) then needs 108 multiplications per
// output and channel where the direct convolution needs 363. The gradients
// come back through the same maps: grad_input by undoing the phase split,
// grad_weight by picking w's taps out of grad w'.
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>

#include <algorithm>

#include "cpu/conv2d_activation/kernels.h"

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace conv_cpu {
namespace {

// The stride-1 problem: phases(x) (n, c*sh*sw, oh + 2, ow + 2) by w' (oc, cg*sh*sw, 3, 3).
Conv2dShape polyphase_shape(const Conv2dShape& s) {
  Conv2dShape p = s;
  p.c = s.c * s.sh * s.sw;
  p.cg = s.cg * s.sh * s.sw;
  p.h = s.oh + 2;
  p.w = s.ow + 2;
  p.kh = p.kw = 3;
  p.sh = p.sw = 1;
  p.ph = p.pw = 0;
  return p;
}

// Padding (negative: cropping) that makes the input exactly (oh + 2) strides by (ow + 2)
// strides, its own padding at the top and left: {left, right, top, bottom}.
std::vector<int64_t> phase_padding(const Conv2dShape& s) {
  const int64_t hh = (s.oh + 2) * s.sh, ww = (s.ow + 2) * s.sw;
  return {s.pw, ww - s.w - s.pw, s.ph, hh - s.h - s.ph};
}

at::Tensor input_from_phases(const at::Tensor& xp, const Conv2dShape& s) {
  std::vector<int64_t> crop = phase_padding(s);
  for (int64_t& v : crop) v = -v;
  return at::constant_pad_nd(xp.view({s.n, s.c, s.sh, s.sw, s.oh + 2, s.ow + 2})
                                 .permute({0, 1, 4, 2, 5, 3})  // n, c, i, py, j, px
                                 .reshape({s.n, s.c, (s.oh + 2) * s.sh, (s.ow + 2) * s.sw}),
                             crop);
}

at::Tensor weight_to_phases(const at::Tensor& w, const Conv2dShape& s) {
  return at::constant_pad_nd(w, {0, 3 * s.sw - s.kw, 0, 3 * s.sh - s.kh})
      .view({s.oc, s.cg, 3, s.sh, 3, s.sw})
      .permute({0, 1, 3, 5, 2, 4})  // o, c, py, px, a, b
      .reshape({s.oc, s.cg * s.sh * s.sw, 3, 3});
}

at::Tensor weight_from_phases(const at::Tensor& wp, const Conv2dShape& s) {
  return wp.view({s.oc, s.cg, s.sh, s.sw, 3, 3})
      .permute({0, 1, 4, 2, 5, 3})  // o, c, a, py, b, px
      .reshape({s.oc, s.cg, 3 * s.sh, 3 * s.sw})
      .narrow(2, 0, s.kh)
      .narrow(3, 0, s.kw);
}

template <int SW>
inline void copy_phases(const float* src, float* dst) {
  for (int px = 0; px < SW; ++px) dst[px] = src[px];
}

}  // namespace

void pack_phases(const Conv2dShape& o, const float* src, int64_t hq, int64_t wq, int64_t wp,
                 float* xn) {
  // Channel (c, py, px) of pixel (i, j) is x[c][i*sh + py - ph][j*sw + px - pw]:
  // for each (c, i, py), the sw phases px of pixel j are sw consecutive floats
  // on both sides, read along an input row.
  const int64_t ch = o.cg * o.sh * o.sw, sw = o.sw;
  // Pixels j whose sw input columns all lie inside the row.
  const int64_t j0 = (o.pw + sw - 1) / sw, j1 = std::min(wq, (o.w + o.pw) / sw);
  for (int64_t c = 0; c < o.cg; ++c)
    for (int64_t i = 0; i < hq; ++i)
      for (int64_t py = 0; py < o.sh; ++py) {
        const int64_t ih = i * o.sh + py - o.ph;
        if (ih < 0 || ih >= o.h) continue;
        const float* row = src + (c * o.h + ih) * o.w - o.pw;  // row[iw + pw]
        float* out = xn + i * wp * ch + (c * o.sh + py) * sw;
        auto edge = [&](int64_t j) {
          for (int64_t px = 0; px < sw; ++px) {
            const int64_t col = j * sw + px;  // iw + pw
            if (col >= o.pw && col < o.w + o.pw) out[j * ch + px] = row[col];
          }
        };
        for (int64_t j = 0; j < std::min(j0, wq); ++j) edge(j);
        if (sw == 4) {  // AlexNet's conv1: one 16-byte move per pixel
          for (int64_t j = j0; j < j1; ++j) copy_phases<4>(row + j * 4, out + j * ch);
        } else {
          for (int64_t j = j0; j < j1; ++j)
            for (int64_t px = 0; px < sw; ++px) out[j * ch + px] = row[j * sw + px];
        }
        for (int64_t j = std::max(j0, j1); j < wq; ++j) edge(j);
      }
}

bool polyphase_supported(const Conv2dShape& s) {
  const bool spans3 = s.sh > 1 && s.sw > 1 && (s.kh - 1) / s.sh + 1 == 3 &&  // ceil(k / s)
                      (s.kw - 1) / s.sw + 1 == 3;
  return spans3 && winograd_supported(polyphase_shape(s));
}

void forward_polyphase(const Conv2dShape& s, const at::Tensor& x, const at::Tensor& w,
                       const at::Tensor& b, at::Tensor& y, Activation act) {
  const at::Tensor wp = weight_to_phases(w, s);
  ConvArgs<float> a{};
  a.x = x.const_data_ptr<float>();  // split into phases as the Winograd path packs it
  a.w = wp.const_data_ptr<float>();
  a.b = b.defined() ? b.const_data_ptr<float>() : nullptr;
  a.y = y.mutable_data_ptr<float>();
  forward_winograd(polyphase_shape(s), a, act, &s);
}

void backward_polyphase(const Conv2dShape& s, const at::Tensor& gy, const at::Tensor& yo,
                        const at::Tensor& x, const at::Tensor& w, Activation act,
                        std::array<bool, 3> mask, at::Tensor& gx, at::Tensor& gw,
                        at::Tensor& gb) {
  const Conv2dShape p = polyphase_shape(s);
  ConvArgs<float> a{};
  a.gy = gy.const_data_ptr<float>();
  a.yo = yo.const_data_ptr<float>();
  at::Tensor wp, gxp, gwp;
  if (mask[0]) {  // grad_input needs the weights
    wp = weight_to_phases(w, s);
    gxp = at::empty({p.n, p.c, p.h, p.w}, x.options());
    a.w = wp.const_data_ptr<float>();
    a.gx = gxp.mutable_data_ptr<float>();
  }
  if (mask[1]) {  // grad_weight needs the input
    gwp = at::empty({p.oc, p.cg, 3, 3}, w.options());
    a.x = x.const_data_ptr<float>();
    a.gw = gwp.mutable_data_ptr<float>();
  }
  if (mask[2]) a.gb = gb.mutable_data_ptr<float>();
  backward_winograd(p, a, act, &s);
  if (mask[0]) gx.copy_(input_from_phases(gxp, s));
  if (mask[1]) gw.copy_(weight_from_phases(gwp, s));
}

}  // namespace conv_cpu
}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
