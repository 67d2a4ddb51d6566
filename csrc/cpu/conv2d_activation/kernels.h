// conv2d_activation on the CPU: what the kernel files share.
//
// conv2d_activation_cpu.cpp picks one path per call (polyphase, then
// try_forward_direct / try_backward_direct below, then the GEMM path):
//   batched  (conv2d_activation_batched.cpp): float32, few channels, stride 1,
//            batch >= V, 8 or 16 (LeNet's C1, C3): direct convolution with one vector
//            lane per image, so no lane is wasted whatever the channel counts.
//   winograd (conv2d_activation_winograd.cpp): float32, 3x3 or 5x5 stride 1,
//            >= 16 channels (AlexNet's conv2-5): F(4x4, 3x3) and F(3x3, 5x5)
//            (F(2x2, .) on small outputs), one GEMM per Winograd point.
//   polyphase (conv2d_activation_polyphase.cpp): float32, a strided kernel
//            spanning three strides (AlexNet's conv1, 11x11 stride 4): the
//            input's stride phases as channels, a 3x3 stride-1 convolution
//            through the Winograd path.
//   blocked  (conv2d_activation_blocked.cpp): float32, >= 16 output channels
//            (AlexNet's conv1): direct convolution, vectors over output
//            channels, register tiles of pixels x channel vectors.
//   gemm     (conv2d_activation_gemm.cpp): any shape, float32 and float64:
//            im2col of a tile into a thread-local buffer, one GEMM (ATen's,
//            MKL), bias + activation on the tile while it is hot. A kernel
//            that covers the whole input (LeNet's C5) is one plain GEMM.
// The batched path runs in the AVX2 and AVX-512 variants (at::vec lanes, 8 or
// 16 images); winograd, polyphase and blocked are AVX-512 code. Where a path
// is missing from a variant, the GEMM path takes its calls. All paths apply the activation as the forward's
// epilogue and its derivative, from the saved output, as the backward's
// prologue, tile by tile; batch reductions (grad_weight, grad_bias) are
// summed in a fixed order (deterministic): per-slot partials on the batched,
// blocked and GEMM paths, chunks of images in order on the Winograd path
// (which thereby does not depend on the thread count either).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>

#include <ATen/Parallel.h>

#include "common/activation.h"
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

// Calls f(std::integral_constant<Activation, A>) so that loops inside f see the
// activation as a constant: the switch in activation_forward folds away and the
// loop vectorizes.
template <typename F>
inline void with_activation(Activation act, F&& f) {
  switch (act) {
    case Activation::Relu: return f(std::integral_constant<Activation, Activation::Relu>());
    case Activation::Tanh: return f(std::integral_constant<Activation, Activation::Tanh>());
    case Activation::ScaledTanh:
      return f(std::integral_constant<Activation, Activation::ScaledTanh>());
    default: return f(std::integral_constant<Activation, Activation::Identity>());
  }
}

// gcc tunes -march=native on these CPUs for 256-bit auto-vectorization; the
// activation loops below run 25% faster with 512-bit vectors (measured). The
// preference is lost when such a function is inlined into a caller without
// it, so the whole-row helpers are not inlined (a call per row is cheap);
// bias_act_channels, called per pixel, is inlined into callers that carry
// the attribute themselves.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define LENETALEX_WIDE_VECTORS __attribute__((target("prefer-vector-width=512")))
#else
#define LENETALEX_WIDE_VECTORS
#endif

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

// The image-batched direct path (conv2d_activation_batched.cpp).
bool batched_supported(const Conv2dShape& s);
void forward_batched(const Conv2dShape& s, const ConvArgs<float>& a, Activation act);
void backward_batched(const Conv2dShape& s, const ConvArgs<float>& a, Activation act);

// The channel-blocked direct forward (conv2d_activation_blocked.cpp).
bool blocked_supported(const Conv2dShape& s);
void forward_blocked(const Conv2dShape& s, const ConvArgs<float>& a, Activation act);
void backward_blocked(const Conv2dShape& s, const ConvArgs<float>& a, Activation act);

// The Winograd path for 3x3 and 5x5 stride-1 layers (conv2d_activation_winograd.cpp).
bool winograd_supported(const Conv2dShape& s);
// strided: the polyphase path's strided convolution, whose input a.x is (s is
// its stride-1 form; see below).
void forward_winograd(const Conv2dShape& s, const ConvArgs<float>& a, Activation act,
                      const Conv2dShape* strided = nullptr);
void backward_winograd(const Conv2dShape& s, const ConvArgs<float>& a, Activation act,
                       const Conv2dShape* strided = nullptr);

// The polyphase path for strided kernels spanning three strides (AlexNet's
// conv1), through the Winograd path (conv2d_activation_polyphase.cpp). Takes
// the tensors (contiguous, float32); grads not in mask are left alone.
bool polyphase_supported(const Conv2dShape& s);
void forward_polyphase(const Conv2dShape& s, const at::Tensor& x, const at::Tensor& w,
                       const at::Tensor& b, at::Tensor& y, Activation act);
void backward_polyphase(const Conv2dShape& s, const at::Tensor& gy, const at::Tensor& yo,
                        const at::Tensor& x, const at::Tensor& w, Activation act,
                        std::array<bool, 3> mask, at::Tensor& gx, at::Tensor& gw,
                        at::Tensor& gb);
// One image's group of the strided input o (cg x h x w at src) as the
// zero-padded channels-last plane of its phases: hq x wq pixels of
// cg*sh*sw channels, wp pixels to a row of xn; positions outside are left alone.
void pack_phases(const Conv2dShape& o, const float* src, int64_t hq, int64_t wq, int64_t wp,
                 float* xn);

// Runs a direct path if one takes this call; float64 always goes the GEMM way.
inline bool try_forward_direct(const Conv2dShape& s, const ConvArgs<float>& a, Activation act) {
  if (batched_supported(s)) return forward_batched(s, a, act), true;
  if (winograd_supported(s)) return forward_winograd(s, a, act), true;
  const bool cover = s.ph == 0 && s.pw == 0 && s.kh == s.h && s.kw == s.w;  // a plain GEMM
  if (!cover && blocked_supported(s)) return forward_blocked(s, a, act), true;
  return false;
}
inline bool try_backward_direct(const Conv2dShape& s, const ConvArgs<float>& a, Activation act) {
  if (batched_supported(s)) return backward_batched(s, a, act), true;
  if (winograd_supported(s)) return backward_winograd(s, a, act), true;
  const bool cover = s.ph == 0 && s.pw == 0 && s.kh == s.h && s.kw == s.w;  // a plain GEMM
  if (!cover && blocked_supported(s)) return backward_blocked(s, a, act), true;
  return false;
}
inline bool try_forward_direct(const Conv2dShape&, const ConvArgs<double>&, Activation) {
  return false;
}
inline bool try_backward_direct(const Conv2dShape&, const ConvArgs<double>&, Activation) {
  return false;
}

}  // namespace conv_cpu
}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
