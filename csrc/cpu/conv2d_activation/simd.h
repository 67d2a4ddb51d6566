// AVX-512 helpers for the direct conv2d_activation kernels (float32).
// Compiled only where the compiler targets AVX-512 (-march=native on such a
// CPU); elsewhere LENETALEX_CONV_SIMD is 0 and the GEMM path does everything.
#pragma once

#if defined(__AVX512F__)
#define LENETALEX_CONV_SIMD 1
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu/conv2d_activation/kernels.h"

// gcc 12 warns about the placeholder operand inside its own unpack/shuffle
// intrinsics (-Wmaybe-uninitialized, or -Wuninitialized where not inlined: a known
// false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace conv_cpu {
namespace simd {

constexpr int V = 16;  // floats per vector

// In-register transpose of a 16x16 float block: r[i] lane j <-> r[j] lane i.
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {  // 2x2 blocks of single floats
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // 2x2 blocks of float pairs
    for (int k = 0; k < 2; ++k) {
      const __m512d a = _mm512_castps_pd(t[i + k]), b = _mm512_castps_pd(t[i + k + 2]);
      r[i + 2 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
      r[i + 2 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    }
  }
  for (int i = 0; i < 16; i += 8) {  // 2x2 blocks of 128-bit quarters
    for (int k = 0; k < 4; ++k) {
      t[i + k] = _mm512_shuffle_f32x4(r[i + k], r[i + k + 4], 0x88);
      t[i + k + 4] = _mm512_shuffle_f32x4(r[i + k], r[i + k + 4], 0xdd);
    }
  }
  for (int k = 0; k < 8; ++k) {  // 2x2 blocks of 256-bit halves
    r[k] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88);
    r[k + 8] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0xdd);
  }
}

// One block of rows x cols (each at most 16) transposed through registers:
// dst[j*dst_ld + i] = src[i*src_ld + j], masked at the block's edges.
inline void transpose_block(const float* src, int64_t src_ld, int rows, int cols, float* dst,
                            int64_t dst_ld) {
  const __mmask16 col_mask = cols >= V ? 0xFFFF : __mmask16((1u << cols) - 1);
  const __mmask16 row_mask = rows >= V ? 0xFFFF : __mmask16((1u << rows) - 1);
  __m512 r[16];
  for (int k = 0; k < V; ++k)
    r[k] = k < rows ? _mm512_maskz_loadu_ps(col_mask, src + k * src_ld) : _mm512_setzero_ps();
  transpose16(r);
  for (int k = 0; k < cols; ++k) _mm512_mask_storeu_ps(dst + k * dst_ld, row_mask, r[k]);
}

// Images to lanes: dst[q*16 + t] = src[t*ld + q] for q < n; lanes t >= nt are 0.
inline void pack_lanes(const float* src, int64_t ld, int nt, int64_t n, float* dst) {
  int64_t q = 0;
  if (nt == V) {
    __m512 r[16];
    for (; q + V <= n; q += V) {
      for (int t = 0; t < V; ++t) r[t] = _mm512_loadu_ps(src + t * ld + q);
      transpose16(r);
      for (int k = 0; k < V; ++k) _mm512_store_ps(dst + (q + k) * V, r[k]);
    }
  }
  for (; q < n; ++q)
    for (int t = 0; t < V; ++t) dst[q * V + t] = t < nt ? src[t * ld + q] : 0.0f;
}

// Lanes to images: dst[t*ld + q] = src[q*16 + t] for q < n, t < nt.
inline void unpack_lanes(const float* src, int64_t n, float* dst, int64_t ld, int nt) {
  int64_t q = 0;
  if (nt == V) {
    __m512 r[16];
    for (; q + V <= n; q += V) {
      for (int k = 0; k < V; ++k) r[k] = _mm512_load_ps(src + (q + k) * V);
      transpose16(r);
      for (int t = 0; t < V; ++t) _mm512_storeu_ps(dst + t * ld + q, r[t]);
    }
  }
  for (; q < n; ++q)
    for (int t = 0; t < nt; ++t) dst[t * ld + q] = src[q * V + t];
}

// The transpose below for fewer than 16 rows written side by side (dst_ld ==
// rows: an image's few channels made channels-last, e.g. AlexNet's 3): 16
// columns at a time, each of the `rows` output vectors gathers its lanes from
// the row vectors with one masked permute per row (lane f of the 16*rows block
// is row f % rows, column f / rows). The scalar loop it replaces cost as much
// as a tenth of AlexNet conv1's forward.
inline void interleave_rows(const float* src, int64_t src_ld, int rows, int64_t cols, float* dst) {
  __m512i idx[V];
  __mmask16 mask[V][V];
  for (int k = 0; k < rows; ++k) {
    alignas(64) int32_t lane_col[V];
    for (int i = 0; i < rows; ++i) mask[k][i] = 0;
    for (int l = 0; l < V; ++l) {
      const int f = k * V + l;
      lane_col[l] = f / rows;
      mask[k][f % rows] |= __mmask16(1u << l);
    }
    idx[k] = _mm512_load_si512(lane_col);
  }
  __m512 r[V];
  int64_t j = 0;
  for (; j + V <= cols; j += V) {
    for (int i = 0; i < rows; ++i) r[i] = _mm512_loadu_ps(src + i * src_ld + j);
    for (int k = 0; k < rows; ++k) {
      __m512 out = _mm512_setzero_ps();
      for (int i = 0; i < rows; ++i)
        out = _mm512_mask_permutexvar_ps(out, mask[k][i], idx[k], r[i]);
      _mm512_storeu_ps(dst + (j * rows) + k * V, out);
    }
  }
  for (; j < cols; ++j)
    for (int i = 0; i < rows; ++i) dst[j * rows + i] = src[i * src_ld + j];
}

// dst[j*dst_ld + i] = src[i*src_ld + j] for i < rows, j < cols: 16x16 blocks
// in registers, the ragged edges one by one.
// The blocks are walked along the side whose rows lie far apart (an NCHW
// plane of P pixels): those rows are then read or written front to back.
// The other order, on NCHW output rows not 64-byte aligned (AlexNet's 729- and
// 3025-pixel planes), ran at 1 GB/s against 5-8 GB/s (measured): every
// 16-float store split two cache lines that were evicted before the next
// block came back to fill them.
inline void transpose(const float* src, int64_t src_ld, int64_t rows, int64_t cols, float* dst,
                      int64_t dst_ld) {
  __m512 r[16];
  const int64_t rows16 = rows / V * V, cols16 = cols / V * V;
  const auto block = [&](int64_t i, int64_t j) {
    for (int k = 0; k < V; ++k) r[k] = _mm512_loadu_ps(src + (i + k) * src_ld + j);
    transpose16(r);
    for (int k = 0; k < V; ++k) _mm512_storeu_ps(dst + (j + k) * dst_ld + i, r[k]);
  };
  if (dst_ld > src_ld) {  // far-apart destination rows: each written in order
    for (int64_t j = 0; j < cols16; j += V)
      for (int64_t i = 0; i < rows16; i += V) block(i, j);
  } else {  // far-apart source rows: each read in order
    for (int64_t i = 0; i < rows16; i += V)
      for (int64_t j = 0; j < cols16; j += V) block(i, j);
  }
  for (int64_t j = cols16; j < cols; ++j)
    for (int64_t i = 0; i < rows16; ++i) dst[j * dst_ld + i] = src[i * src_ld + j];
  // Fewer than 16 rows packed side by side: the vector interleave. Other
  // leftover rows: walk the destination in order, reading them side by side.
  if (rows < V && dst_ld == rows) {
    interleave_rows(src, src_ld, int(rows), cols, dst);
  } else if (rows16 < rows) {
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t i = rows16; i < rows; ++i) dst[j * dst_ld + i] = src[i * src_ld + j];
  }
}

}  // namespace simd

// Channels-last, zero-padded plane of one image's group: plane[top + ih][left + iw][c]
// = src[c][ih][iw] for ch planes of h*w; only the interior is written (the
// border stays zero). tmp holds h*w*ch floats.
inline void pack_plane(const float* src, int64_t ch, int64_t h, int64_t w, int64_t top,
                       int64_t left, int64_t wp, float* plane, float* tmp) {
  if (left == 0 && wp == w) {  // rows of the plane are rows of the input: one transpose
    simd::transpose(src, h * w, ch, h * w, plane + top * wp * ch, ch);
    return;
  }
  simd::transpose(src, h * w, ch, h * w, tmp, ch);
  for (int64_t ih = 0; ih < h; ++ih)
    std::memcpy(plane + ((top + ih) * wp + left) * ch, tmp + ih * w * ch, w * ch * sizeof(float));
}

// The channels-last backward's prologue for one image's group: from NCHW
// planes gy and yo (ocg x P), gpre[q*ld + o] = grad_output * act'(output);
// ty holds P*ocg floats. Adds each channel's sum over pixels to bias_acc
// (grad_bias) unless it is null.
inline void grad_pre_channels_last(Activation act, const float* gy, const float* yo, int64_t P,
                                   int64_t ocg, float* gpre, int64_t ld, float* ty,
                                   float* bias_acc) {
  simd::transpose(gy, P, ocg, P, gpre, ld);
  simd::transpose(yo, P, ocg, P, ty, ocg);
  with_activation(act, [&](auto A) {
    if (ld == ocg) {
      grad_pre_row<decltype(A)::value, float>(gpre, ty, gpre, P * ocg);
    } else {
      for (int64_t q = 0; q < P; ++q)
        grad_pre_row<decltype(A)::value, float>(gpre + q * ld, ty + q * ocg, gpre + q * ld, ocg);
    }
  });
  if (bias_acc) {
    for (int64_t q = 0; q < P; ++q)
#pragma omp simd
      for (int64_t o = 0; o < ocg; ++o) bias_acc[o] += gpre[q * ld + o];
  }
}
}  // namespace conv_cpu
}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex

#else
#define LENETALEX_CONV_SIMD 0
#endif
