// conv2d_activation on the CPU, GEMM path: any shape, float32 and float64.
//
// The work is cut into tasks of (a tile of images, one group); tasks run in
// parallel. Inside a task the output is walked in chunks of output rows, so the
// column buffer of a chunk (K = C/groups * kH * kW rows) stays in L2:
//   forward:  col = im2col(x chunk); y chunk = W_g . col (one GEMM, ATen's/MKL);
//             then act(. + bias) on the chunk while it is hot.
//   backward: gpre = grad_output * act'(output) for the chunk (from the saved
//             output; never a pre-activation tensor), then
//             grad_bias   += row sums of gpre,
//             grad_weight += gpre . col^T   (per-slot partials, summed in a
//                                            fixed order: deterministic),
//             grad_input  += col2im(W_g^T . gpre).
// Small outputs (LeNet's C3: 10x10) tile several images side by side so the
// GEMM is wide enough; a kernel that covers the whole input (LeNet's C5) is a
// plain matrix product with no im2col at all.
#include <ATen/Parallel.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>

#include <cstring>

#include "cpu/conv2d_activation/kernels.h"
#include "cpu/scratch.h"

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace conv_cpu {

// Products up to this many multiply-adds run as a plain loop: ATen's mm costs
// about 5-8 us a call (dispatch, tensor wrappers, MKL's setup), which was most
// of a tiny conv's forward+backward (the bench's overhead row, (1,1,8,8) x
// (2,1,3,3): three such calls), while the loop takes a few ns per product.
constexpr int64_t kLoopGemmMacs = 4096;

// c (m x n) = a (m x k) . b (k x n) [+ c], a and b read transposed if asked.
template <typename T>
void gemm_loop(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
               const T* b, int64_t ldb, T* c, int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      T acc = accumulate ? c[i * ldc + j] : T(0);
      for (int64_t p = 0; p < k; ++p)
        acc += (ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
      c[i * ldc + j] = acc;
    }
}

template <typename T>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
          int64_t ldb, T* c, int64_t ldc, bool accumulate) {
  if (m * n * k <= kLoopGemmMacs) {
    return gemm_loop(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, accumulate);
  }
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto mat = [&](const T* p, bool t, int64_t rows, int64_t cols, int64_t ld) {
    T* q = const_cast<T*>(p);  // from_blob wants a mutable pointer; these are only read
    return t ? at::from_blob(q, {cols, rows}, {ld, 1}, opts).t()
             : at::from_blob(q, {rows, cols}, {ld, 1}, opts);
  };
  at::Tensor out = at::from_blob(c, {m, n}, {ldc, 1}, opts);
  if (accumulate) {
    at::addmm_out(out, out, mat(a, ta, m, k, lda), mat(b, tb, k, n, ldb));
  } else {
    at::mm_out(out, mat(a, ta, m, k, lda), mat(b, tb, k, n, ldb));
  }
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t,
                         const float*, int64_t, float*, int64_t, bool);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, const double*, int64_t,
                          const double*, int64_t, double*, int64_t, bool);

namespace {

// How the output is cut into tasks: `images` images side by side per task
// (several when one image's output is small); with one image, chunks of `rows`
// output rows.
struct Geometry {
  int64_t P, K, HW, images, rows, max_cols, tasks;
  bool cover;      // the kernel covers the whole (unpadded) input: y = x . W^T
  bool pointwise;  // 1x1, stride 1, no padding: the input chunk is its own col
};

Geometry plan(const Conv2dShape& s, int64_t elem_size) {
  Geometry g;
  g.P = s.oh * s.ow;
  g.K = s.cg * s.kh * s.kw;
  g.HW = s.h * s.w;
  g.cover = covers_input(s);
  g.pointwise = s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.ph == 0 && s.pw == 0;
  // Columns per chunk: the col buffer (K x cols) about 1 MiB, i.e. in L2, but
  // at least 64 columns so the GEMM is not too thin.
  const int64_t target = std::clamp<int64_t>((int64_t(1) << 20) / (elem_size * g.K), 64, 4096);
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t per_thread = std::max<int64_t>(1, (s.n + threads - 1) / threads);
  if (g.P >= target / 2 && !g.cover) {
    g.images = 1;
    g.rows = std::clamp<int64_t>(target / s.ow, 1, s.oh);
  } else {
    g.images = std::clamp<int64_t>(target / g.P, 1, per_thread);
    g.rows = s.oh;
  }
  g.max_cols = g.images * g.rows * s.ow;
  g.tasks = (s.n + g.images - 1) / g.images * s.groups;
  return g;
}

// col[k][t*pc + q], k = (c, i, j) over the group's channels and the kernel,
// t over the nt images from n0, q over output rows [r0, r1) x all columns.
template <typename T>
void im2col(const Conv2dShape& s, const T* x, int64_t n0, int64_t nt, int64_t grp, int64_t r0,
            int64_t r1, T* col) {
  const int64_t pc = (r1 - r0) * s.ow, cols = nt * pc;
  for (int64_t c = 0; c < s.cg; ++c)
    for (int64_t i = 0; i < s.kh; ++i)
      for (int64_t j = 0; j < s.kw; ++j) {
        T* row = col + ((c * s.kh + i) * s.kw + j) * cols;
        int64_t lo, hi;
        valid_range(s.ow, s.w, s.sw, s.pw, j, lo, hi);
        for (int64_t t = 0; t < nt; ++t) {
          const T* xin = x + ((n0 + t) * s.c + grp * s.cg + c) * s.h * s.w;
          for (int64_t oh = r0; oh < r1; ++oh) {
            T* dst = row + t * pc + (oh - r0) * s.ow;
            const int64_t ih = oh * s.sh - s.ph + i;
            if (ih < 0 || ih >= s.h) {
              std::fill(dst, dst + s.ow, T(0));
              continue;
            }
            const T* src = xin + ih * s.w - s.pw + j;
            std::fill(dst, dst + lo, T(0));
            if (s.sw == 1) {
              std::memcpy(dst + lo, src + lo, (hi - lo) * sizeof(T));
            } else {
              for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[ow * s.sw];
            }
            std::fill(dst + hi, dst + s.ow, T(0));
          }
        }
      }
}

// The adjoint of im2col: gx += col2im(gcol), over the same chunk.
template <typename T>
void col2im_add(const Conv2dShape& s, const T* gcol, int64_t n0, int64_t nt, int64_t grp,
                int64_t r0, int64_t r1, T* gx) {
  const int64_t pc = (r1 - r0) * s.ow, cols = nt * pc;
  for (int64_t c = 0; c < s.cg; ++c)
    for (int64_t i = 0; i < s.kh; ++i)
      for (int64_t j = 0; j < s.kw; ++j) {
        const T* row = gcol + ((c * s.kh + i) * s.kw + j) * cols;
        int64_t lo, hi;
        valid_range(s.ow, s.w, s.sw, s.pw, j, lo, hi);
        for (int64_t t = 0; t < nt; ++t) {
          T* gin = gx + ((n0 + t) * s.c + grp * s.cg + c) * s.h * s.w;
          for (int64_t oh = r0; oh < r1; ++oh) {
            const int64_t ih = oh * s.sh - s.ph + i;
            if (ih < 0 || ih >= s.h) continue;
            const T* src = row + t * pc + (oh - r0) * s.ow;
            T* dst = gin + ih * s.w - s.pw + j;
            if (s.sw == 1) {
              for (int64_t ow = lo; ow < hi; ++ow) dst[ow] += src[ow];
            } else {
              for (int64_t ow = lo; ow < hi; ++ow) dst[ow * s.sw] += src[ow];
            }
          }
        }
      }
}

// Forward when the kernel covers the input: y[n0:n0+nt, group] = x_tile . W_g^T.
template <typename T>
void forward_cover_task(const Conv2dShape& s, const Geometry& geo, const ConvArgs<T>& a,
                        Activation act, int64_t n0, int64_t nt, int64_t grp) {
  const int64_t chw = s.c * geo.HW;
  T* y = a.y + n0 * s.oc + grp * s.ocg;
  gemm<T>(false, true, nt, s.ocg, geo.K, a.x + n0 * chw + grp * geo.K, chw,
          a.w + grp * s.ocg * geo.K, geo.K, y, s.oc, false);
  const T* b = a.b ? a.b + grp * s.ocg : nullptr;
  with_activation(act, [&](auto A) {
    for (int64_t t = 0; t < nt; ++t)
      bias_act_channels<decltype(A)::value, T>(y + t * s.oc, b, s.ocg);
  });
}

}  // namespace

template <typename T>
void forward_gemm(const Conv2dShape& s, const ConvArgs<T>& a, Activation act) {
  const Geometry geo = plan(s, sizeof(T));
  at::parallel_for(0, geo.tasks, grain(s, geo.tasks), [&](int64_t begin, int64_t end) {
    Scratch local;
    T* colbuf = nullptr;
    T* outbuf = nullptr;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t grp = task % s.groups, n0 = task / s.groups * geo.images;
      const int64_t nt = std::min(geo.images, s.n - n0);
      if (geo.cover) {
        forward_cover_task(s, geo, a, act, n0, nt, grp);
        continue;
      }
      for (int64_t r0 = 0; r0 < s.oh; r0 += geo.rows) {
        const int64_t r1 = std::min(s.oh, r0 + geo.rows), pc = (r1 - r0) * s.ow, cols = nt * pc;
        const T* col;
        int64_t ldcol;
        if (geo.pointwise && nt == 1) {  // the input chunk is already K x cols
          col = a.x + (n0 * s.c + grp * s.cg) * geo.HW + r0 * s.ow;
          ldcol = geo.HW;
        } else {
          if (!colbuf) colbuf = local.values<T>(geo.K * geo.max_cols);
          im2col(s, a.x, n0, nt, grp, r0, r1, colbuf);
          col = colbuf;
          ldcol = cols;
        }
        // One image: GEMM straight into y (rows of the group's channels, ld = P).
        T* c;
        int64_t ldc;
        if (nt == 1) {
          c = a.y + (n0 * s.oc + grp * s.ocg) * geo.P + r0 * s.ow;
          ldc = geo.P;
        } else {
          if (!outbuf) outbuf = local.values<T>(s.ocg * geo.max_cols);
          c = outbuf;
          ldc = cols;
        }
        gemm<T>(false, false, s.ocg, cols, geo.K, a.w + grp * s.ocg * geo.K, geo.K, col, ldcol, c,
                ldc, false);
        // Epilogue while the chunk is in cache: act(. + bias), scattered to NCHW.
        with_activation(act, [&](auto A) {
          for (int64_t o = 0; o < s.ocg; ++o) {
            const int64_t oc = grp * s.ocg + o;
            const T bias = a.b ? a.b[oc] : T(0);
            for (int64_t t = 0; t < nt; ++t) {
              T* dst = a.y + ((n0 + t) * s.oc + oc) * geo.P + r0 * s.ow;
              bias_act_row<decltype(A)::value, T>(c + o * ldc + t * pc, dst, pc, bias);
            }
          }
        });
      }
    }
  });
}

template <typename T>
void backward_gemm(const Conv2dShape& s, const ConvArgs<T>& a, Activation act) {
  const Geometry geo = plan(s, sizeof(T));
  const int64_t wsize = s.oc * geo.K, chw = s.c * geo.HW;
  // Reductions over the batch (grad_weight, grad_bias) go to one partial per
  // slot; slots are fixed ranges of tasks, summed in slot order at the end, so
  // the result does not depend on scheduling.
  const int64_t slots = slots_for(s, geo.tasks);
  Scratch scratch;
  T* gw_part = a.gw ? scratch.values<T>(slots * wsize, true) : nullptr;
  T* gb_part = a.gb ? scratch.values<T>(slots * s.oc, true) : nullptr;

  at::parallel_for(0, slots, grain(s, slots), [&](int64_t slot_begin, int64_t slot_end) {
    Scratch local;
    T* gpre = local.values<T>(s.ocg * geo.max_cols);
    T* colbuf = nullptr;
    for (int64_t slot = slot_begin; slot < slot_end; ++slot) {
      T* gwp = a.gw ? gw_part + slot * wsize : nullptr;
      T* gbp = a.gb ? gb_part + slot * s.oc : nullptr;
      const int64_t task_begin = geo.tasks * slot / slots;
      const int64_t task_end = geo.tasks * (slot + 1) / slots;
      for (int64_t task = task_begin; task < task_end; ++task) {
        const int64_t grp = task % s.groups, n0 = task / s.groups * geo.images;
        const int64_t nt = std::min(geo.images, s.n - n0);
        const T* wg = a.w + grp * s.ocg * geo.K;
        if (a.gx && !geo.cover) {
          for (int64_t t = 0; t < nt; ++t) {
            T* blk = a.gx + (n0 + t) * chw + grp * s.cg * geo.HW;
            std::fill(blk, blk + s.cg * geo.HW, T(0));
          }
        }
        for (int64_t r0 = 0; r0 < s.oh; r0 += geo.rows) {
          const int64_t r1 = std::min(s.oh, r0 + geo.rows), pc = (r1 - r0) * s.ow,
                        cols = nt * pc;
          // gpre (ocg x cols): the prologue, from the saved output. With a
          // covering kernel it is laid out (nt x ocg) instead, like y itself.
          with_activation(act, [&](auto A) {
            for (int64_t t = 0; t < nt; ++t) {
              if (geo.cover) {
                const int64_t off = (n0 + t) * s.oc + grp * s.ocg;
                grad_pre_row<decltype(A)::value, T>(a.gy + off, a.yo + off, gpre + t * s.ocg,
                                                    s.ocg);
                continue;
              }
              for (int64_t o = 0; o < s.ocg; ++o) {
                const int64_t off = ((n0 + t) * s.oc + grp * s.ocg + o) * geo.P + r0 * s.ow;
                grad_pre_row<decltype(A)::value, T>(a.gy + off, a.yo + off,
                                                    gpre + o * cols + t * pc, pc);
              }
            }
          });
          if (geo.cover) {
            const T* xt = a.x + n0 * chw + grp * geo.K;
            if (gbp)
              for (int64_t t = 0; t < nt; ++t)
                for (int64_t o = 0; o < s.ocg; ++o) gbp[grp * s.ocg + o] += gpre[t * s.ocg + o];
            if (gwp)  // gw_g (ocg x K) += gpre^T (ocg x nt) . x_tile (nt x K)
              gemm<T>(true, false, s.ocg, geo.K, nt, gpre, s.ocg, xt, chw,
                      gwp + grp * s.ocg * geo.K, geo.K, true);
            if (a.gx)  // gx_tile (nt x K) = gpre (nt x ocg) . W_g (ocg x K)
              gemm<T>(false, false, nt, geo.K, s.ocg, gpre, s.ocg, wg, geo.K,
                      a.gx + n0 * chw + grp * geo.K, chw, false);
            continue;
          }
          if (gbp) {
            for (int64_t o = 0; o < s.ocg; ++o) {
              const T* row = gpre + o * cols;
              T acc = 0;
              for (int64_t q = 0; q < cols; ++q) acc += row[q];
              gbp[grp * s.ocg + o] += acc;
            }
          }
          const bool view = geo.pointwise && nt == 1;  // the input chunk is its own col
          const int64_t in_off = (n0 * s.c + grp * s.cg) * geo.HW + r0 * s.ow;
          if (gwp) {
            const T* col = a.x + in_off;
            int64_t ldcol = geo.HW;
            if (!view) {
              if (!colbuf) colbuf = local.values<T>(geo.K * geo.max_cols);
              im2col(s, a.x, n0, nt, grp, r0, r1, colbuf);
              col = colbuf;
              ldcol = cols;
            }
            // gw_g (ocg x K) += gpre (ocg x cols) . col^T (cols x K)
            gemm<T>(false, true, s.ocg, geo.K, cols, gpre, cols, col, ldcol,
                    gwp + grp * s.ocg * geo.K, geo.K, true);
          }
          if (a.gx) {
            if (view) {  // gx chunk (cg x cols, ld HW) = W_g^T . gpre, no overlap between chunks
              gemm<T>(true, false, geo.K, cols, s.ocg, wg, geo.K, gpre, cols, a.gx + in_off,
                      geo.HW, false);
            } else {
              if (!colbuf) colbuf = local.values<T>(geo.K * geo.max_cols);
              gemm<T>(true, false, geo.K, cols, s.ocg, wg, geo.K, gpre, cols, colbuf, cols,
                      false);
              col2im_add(s, colbuf, n0, nt, grp, r0, r1, a.gx);
            }
          }
        }
      }
    }
  });
  // Sum the partials in slot order.
  auto reduce = [&](const T* p, T* out, int64_t size) {
    at::parallel_for(0, size, grain(s, size, 4096), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        T acc = p[i];
        for (int64_t k = 1; k < slots; ++k) acc += p[k * size + i];
        out[i] = acc;
      }
    });
  };
  if (a.gw) reduce(gw_part, a.gw, wsize);
  if (a.gb) reduce(gb_part, a.gb, s.oc);
}

template void forward_gemm<float>(const Conv2dShape&, const ConvArgs<float>&, Activation);
template void forward_gemm<double>(const Conv2dShape&, const ConvArgs<double>&, Activation);
template void backward_gemm<float>(const Conv2dShape&, const ConvArgs<float>&, Activation);
template void backward_gemm<double>(const Conv2dShape&, const ConvArgs<double>&, Activation);

}  // namespace conv_cpu
}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
