// conv2d_activation on the CPU: which path runs a call, and why. Every entry
// (conv2d_activation_cpu.cpp: forward, backward, and the debug op
// _conv2d_activation_path) asks choose_path(); nothing else chooses.
//
// The paths, in the order choose_path tries them (first that takes the call):
//
// | path      | file          | takes (float32 only; float64 is always gemm)            | variants       | LeNet-5 / AlexNet shapes (bench rows)         |
// |-----------|---------------|---------------------------------------------------------|----------------|-----------------------------------------------|
// | polyphase | polyphase.cpp | stride > 1, kernel spanning 3 strides, whose stride-1   | avx512         | alexnet_conv1 (11x11 s4), fwd and bwd          |
// |           |               | 3x3 form over the stride phases Winograd takes           |                |                                               |
// | batched   | batched.cpp   | stride 1, batch >= V (8 avx2, 16 avx512), cg <= 32,      | avx2, avx512   | lenet_c1, lenet_c3 (batch 256), fwd and bwd    |
// |           |               | ocg <= 64, k <= 11, padding < k, not covers_input,      |                |                                               |
// |           |               | padded planes of one task within ~4 MB                  |                |                                               |
// | winograd  | winograd.cpp  | 3x3 or 5x5 stride 1, cg and ocg >= 16, padding < k,      | avx512         | alexnet_conv2 .. conv5, fwd and bwd            |
// |           |               | output >= 2x2                                           |                |                                               |
// | onednn    | onednn.cpp    | ocg >= 64, cg*kh*kw >= 256, not covers_input: PyTorch's | all            | alexnet_conv1 .. conv5 in baseline and avx2    |
// |           |               | convolution (oneDNN) + our bias/activation pass          |                |                                               |
// | gemm      | gemm.cpp      | everything else (covers_input: one plain GEMM)          | all            | lenet_c5 (covers its input), LeNet's C1/C3 in  |
// |           |               |                                                         |                | the baseline variant                          |
//
// Backward (grad_input, grad_weight, grad_bias) runs on the forward's path:
// the same choice, all three grads of one call in one pass over the images.
// So AlexNet conv3's backward on an AVX-512 CPU is Winograd F(4x4, 3x3)
// (winograd.cpp: 13x13 output, 256 -> 384 channels), on an AVX2 or older CPU
// the oneDNN path (its activation-gradient pass, then at::convolution_backward).
//
// What earned each path its place (speedup over the plain-PyTorch reference,
// bench/results/cpu-2core-avx512.md, 2-core AVX-512 Xeon, commit c93c559;
// bench/results/cpu-amd-epyc-avx2.md for the AVX2/baseline comparison):
//   polyphase: alexnet_conv1 2.08x fwd+bwd, 1.04x fwd (the GEMM path was under
//              1.0x there; abf098c, the Winograd chunking, +12% fwd).
//   batched:   lenet_c1 10.19x fwd+bwd, 2.24x fwd; lenet_c3 1.77x, 1.51x. On the
//              AVX2 EPYC the same rows go from 5.20x (baseline, GEMM path) to
//              6.00x fwd+bwd for lenet_c1, 23.99 against 43.97 ms.
//   winograd:  alexnet_conv2..5 1.27-1.45x fwd+bwd, 1.19-1.93x fwd; on the
//              AVX2 EPYC the GEMM path gets 0.99-1.12x on the same rows.
//   onednn:    on the AVX2 EPYC (idle, bench --quick, avx2 variant) the GEMM
//              path ran alexnet_conv1..5 at 0.55-0.73x fwd and 0.55-1.25x
//              fwd+bwd (ATen's mm is MKL, slow on AMD); the figures with this
//              path: bench/results/cpu-amd-epyc-avx2.md. With ReLU fused into
//              oneDNN's convolution (onednn.cpp), 1.13-1.20x fwd (under load).
//   gemm:      lenet_c5 3.60x fwd+bwd, 5.27x fwd (a plain GEMM); the fallback.
// A channel-blocked direct path (AVX-512, >= 16 output channels) was removed
// (issue 19): once polyphase took AlexNet conv1 it served no bench row, only
// LeNet C3 at batch < 16, unmeasured; such calls now go the GEMM way.
#pragma once

#include <cstdint>

#include <c10/core/ScalarType.h>

#include "cpu/isa.h"
#include "ops/conv2d_activation.h"

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace conv_cpu {

enum class Path : int { None, Polyphase, Batched, Winograd, Onednn, Gemm };

// The debug op's names.
inline const char* path_name(Path p) {
  switch (p) {
    case Path::Polyphase: return "polyphase";
    case Path::Batched: return "batched";
    case Path::Winograd: return "winograd";
    case Path::Onednn: return "onednn";
    case Path::Gemm: return "gemm";
    default: return "none";
  }
}

// The kernel covers the whole unpadded input: the convolution is one matrix
// product, y = x . W^T (LeNet's C5).
inline bool covers_input(const Conv2dShape& s) {
  return s.ph == 0 && s.pw == 0 && s.kh == s.h && s.kw == s.w;
}

// Each path's own test of a float32 shape, in its file. In the variants that
// lack a path (table above) the test is a stub returning false.
bool polyphase_supported(const Conv2dShape& s);
bool batched_supported(const Conv2dShape& s);
bool winograd_supported(const Conv2dShape& s);
bool onednn_supported(const Conv2dShape& s);  // every variant

// The path of one call. None: the entry returns before any kernel (an empty
// output; a backward over no images or no channels, whose grads are zeros).
// The three grads of a backward share its path (part: ops/conv2d_activation.h).
inline Path choose_path(const Conv2dShape& s, c10::ScalarType dtype, ConvPart part) {
  const bool empty = part == ConvPart::Forward ? s.n * s.oc * s.oh * s.ow == 0 : s.n == 0 || s.c == 0;
  if (empty) return Path::None;
  if (dtype != c10::kFloat) return Path::Gemm;
  if (polyphase_supported(s)) return Path::Polyphase;
  if (batched_supported(s)) return Path::Batched;
  if (winograd_supported(s)) return Path::Winograd;
  if (onednn_supported(s)) return Path::Onednn;
  return Path::Gemm;
}

}  // namespace conv_cpu
}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
