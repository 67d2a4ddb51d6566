// conv2d_activation on the CPU: what the path files share (helpers, the
// call's pointers, each path's entry points). Which path runs a call, and
// why: plan.h.
//
// All paths apply the activation as the forward's epilogue and its
// derivative, from the saved output, as the backward's prologue, tile by
// tile; batch reductions (grad_weight, grad_bias) are summed in a fixed order
// (deterministic): per-slot partials on the batched and GEMM paths, chunks of
// images in order on the Winograd path (which thereby does not depend on the
// thread count either).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <tuple>

#include <ATen/Parallel.h>

#include "common/activation.h"
#include "common/wide_vectors.h"
#include "cpu/conv2d_activation/plan.h"
#include "ops/conv2d_activation.h"

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace conv_cpu {

// Output positions [lo, hi) whose input position o*s - p + k lies inside [0, size).
inline void valid_range(int64_t out, int64_t size, int64_t s, int64_t p, int64_t k, int64_t& lo,
                        int64_t& hi) {
  lo = p - k > 0 ? (p - k - 1) / s + 1 : 0;  // o*s - p + k >= 0 (no p - k + s - 1: s may be ~2^63)
  const int64_t last = size - 1 + p - k;     // o*s - p + k <= size - 1
  hi = last < 0 ? 0 : std::min(out, last / s + 1);
  lo = std::min(lo, hi);
}

// dst[i] = act(src[i] + bias): the forward's epilogue on one row of a tile.
template <Activation A, typename T>
__attribute__((noinline)) LENETALEX_WIDE_VECTORS void bias_act_row(const T* src, T* dst,
                                                                   int64_t len, T bias) {
  for (int64_t i = 0; i < len; ++i) dst[i] = activation_forward<T>(A, src[i] + bias);
}

// row[l] = act(row[l] + bias[l]) for l < len (bias may be null): the epilogue
// on a tile laid out channels-last.
template <Activation A, typename T>
LENETALEX_WIDE_VECTORS inline void bias_act_channels(T* row, const T* bias, int64_t len) {
  if (bias) {
    for (int64_t l = 0; l < len; ++l) row[l] = activation_forward<T>(A, row[l] + bias[l]);
  } else {
    for (int64_t l = 0; l < len; ++l) row[l] = activation_forward<T>(A, row[l]);
  }
}

// gpre[i] = gy[i] * act'(y[i]): the backward's prologue on one row of a tile.
template <Activation A, typename T>
__attribute__((noinline)) LENETALEX_WIDE_VECTORS void grad_pre_row(const T* gy, const T* y, T* gpre,
                                                                   int64_t len) {
  for (int64_t i = 0; i < len; ++i) gpre[i] = gy[i] * activation_grad_from_output<T>(A, y[i]);
}

// Multiply-adds x 2 of the forward; the backward does about twice that.
inline double conv_flops(const Conv2dShape& s) {
  return 2.0 * s.n * s.oc * s.oh * s.ow * s.cg * s.kh * s.kw;
}

// Grain for at::parallel_for over n tasks of one call: all n (so it runs
// inline) when the call is too small to pay for waking the other threads,
// which on a busy machine can cost more than the work; else `fine`.
inline int64_t grain(const Conv2dShape& s, int64_t n, int64_t fine = 1) {
  return conv_flops(s) < 2e6 ? std::max<int64_t>(n, 1) : fine;
}

// A forward's independent tasks (each writes its own part of the output),
// handed to the intra-op threads one at a time rather than in fixed chunks:
//   TaskQueue q(s, n);
//   at::parallel_for(0, q.workers(), 1, [&](int64_t, int64_t) {
//     ... per-thread buffers ...
//     for (int64_t task; q.next(task);) ...
//   });
// On a shared machine a core slowed by a neighbour then takes fewer tasks
// instead of holding the others at the barrier (with fixed chunks, libgomp's
// barrier spin was 12% of AlexNet conv1's forward samples). Backward passes
// keep fixed slots, which make their reductions deterministic.
class TaskQueue {
 public:
  TaskQueue(const Conv2dShape& s, int64_t n) : n_(n), inline_(grain(s, n) >= n) {}
  int64_t workers() const {
    return inline_ ? 1 : std::max<int64_t>(1, std::min<int64_t>(n_, at::get_num_threads()));
  }
  bool next(int64_t& task) {
    task = next_.fetch_add(1, std::memory_order_relaxed);
    return task < n_;
  }

 private:
  int64_t n_;
  bool inline_;
  std::atomic<int64_t> next_{0};
};

// Partial sums of a backward's reductions (grad_weight, grad_bias): one per
// slot, a slot being a fixed range of tasks; summed in slot order, so results
// do not depend on scheduling.
inline int64_t slots_for(const Conv2dShape& s, int64_t tasks) {
  if (conv_flops(s) < 2e6) return 1;
  return std::min<int64_t>(tasks, std::max(1, at::get_num_threads()));
}

// Pointers of one call; grads not asked for are nullptr. Tensors are contiguous NCHW.
template <typename T>
struct ConvArgs {
  const T* x;
  const T* w;
  const T* b;   // forward: bias or nullptr
  T* y;         // forward: output
  const T* gy;  // backward: grad_output
  const T* yo;  // backward: saved output
  T* gx;
  T* gw;
  T* gb;
};

// c (m x n) = op(a) . op(b), or c += ... with accumulate: row-major matrices
// with leading dimensions, on raw pointers, through ATen's GEMM (MKL).
// Called inside parallel tasks, where MKL runs single-threaded.
template <typename T>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
          int64_t ldb, T* c, int64_t ldc, bool accumulate);

template <typename T>
void forward_gemm(const Conv2dShape& s, const ConvArgs<T>& a, Activation act);
template <typename T>
void backward_gemm(const Conv2dShape& s, const ConvArgs<T>& a, Activation act);

// The image-batched direct path (batched.cpp).
void forward_batched(const Conv2dShape& s, const ConvArgs<float>& a, Activation act);
void backward_batched(const Conv2dShape& s, const ConvArgs<float>& a, Activation act);

// The Winograd path for 3x3 and 5x5 stride-1 layers (winograd.cpp).
// strided: the polyphase path's strided convolution, whose input a.x is (s is
// its stride-1 form; see below).
void forward_winograd(const Conv2dShape& s, const ConvArgs<float>& a, Activation act,
                      const Conv2dShape* strided = nullptr);
void backward_winograd(const Conv2dShape& s, const ConvArgs<float>& a, Activation act,
                       const Conv2dShape* strided = nullptr);

// The polyphase path for strided kernels spanning three strides (AlexNet's
// conv1), through the Winograd path (polyphase.cpp). Takes
// the tensors (contiguous, float32); grads not in mask are left alone.
void forward_polyphase(const Conv2dShape& s, const at::Tensor& x, const at::Tensor& w,
                       const at::Tensor& b, at::Tensor& y, Activation act);
void backward_polyphase(const Conv2dShape& s, const at::Tensor& gy, const at::Tensor& yo,
                        const at::Tensor& x, const at::Tensor& w, Activation act,
                        std::array<bool, 3> mask, at::Tensor& gx, at::Tensor& gw,
                        at::Tensor& gb);
// The oneDNN path for large GEMM-shaped layers (onednn.cpp): PyTorch's
// convolution with our bias + activation pass. Both return their own
// outputs (y; the grads, empty where mask is off), which PyTorch's
// convolution allocates: the entry allocates nothing for this path.
at::Tensor forward_onednn(const Conv2dShape& s, const at::Tensor& x, const at::Tensor& w,
                          const at::Tensor& b, Activation act);
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_onednn(
    const Conv2dShape& s, const at::Tensor& gy, const at::Tensor& yo, const at::Tensor& x,
    const at::Tensor& w, Activation act, std::array<bool, 3> mask);
// One image's group of the strided input o (cg x h x w at src) as the
// zero-padded channels-last plane of its phases: hq x wq pixels of
// cg*sh*sw channels, wp pixels to a row of xn; positions outside are left alone.
void pack_phases(const Conv2dShape& o, const float* src, int64_t hq, int64_t wq, int64_t wp,
                 float* xn);

}  // namespace conv_cpu
}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
