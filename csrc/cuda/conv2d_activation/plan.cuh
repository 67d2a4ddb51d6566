// conv2d_activation on CUDA: which kernels run a call, and why. Every entry
// (conv2d_activation_cuda.cu: forward, backward, and the debug op
// _conv2d_activation_path) asks choose_path(); nothing else chooses.
//
// | part        | path           | takes                                                    | LeNet-5 / AlexNet shapes               |
// |-------------|----------------|----------------------------------------------------------|----------------------------------------|
// | forward     | cudnn_epilogue | per group M = N*OH*OW >= 4096, ocg >= 64, K = cg*KH*KW   | AlexNet conv1-5 at batch >= 2          |
// |             |                | >= 256, in float16/bfloat16, or float32 with TF32 off    | (float16, bfloat16; float32 TF32 off)  |
// |             |                | for cuDNN: cuDNN's convolution, our bias + activation    |                                        |
// | forward     | direct         | "LeNet-sized": k <= 7, cg*KH*KW <= 512, ocg <= 32,       | LeNet C1, C3                           |
// |             |                | OH*OW >= 64, and one channel's input tile + filters fit  |                                        |
// |             |                | 48 KiB of shared memory (direct.cuh)                     |                                        |
// | forward     | igemm          | everything else: 64 x 64 tiles of the implicit GEMM      | LeNet C5; AlexNet's in float32 with    |
// |             |                | (igemm.cuh, problems.cuh), bias + activation epilogue    | TF32 allowed, and in float64           |
// | grad_input  | igemm          | always: transposed conv, split-K when the tiles alone    | all                                    |
// | grad_weight | igemm          | would not fill the GPU; tile 64x64, 128x32 or 256x16      | all                                    |
// | grad_bias   | column_sums    | always: column sums over chunks of images, then per      | all                                    |
// |             |                | channel a fixed-order sum                                |                                        |
// none: nothing is launched (an empty output or grad; grad_bias over no
// images or pixels is zero-filled).
//
// Why, by estimate (no GPU run yet; README "GPU results"), H100 SXM: our
// SIMT igemm issues ~33% FFMA of 67 TFLOP/s, ~22 TFLOP/s, in every dtype;
// cuDNN reaches ~600-800 TFLOP/s of bf16/fp16 tensor cores and ~45-55
// TFLOP/s of FP32 SIMT. AlexNet's 170 GFLOP forward at batch 128 is then
// ~7.7 ms ours against ~0.25 ms (bf16) or ~3.5 ms (fp32, TF32 off) plus the
// epilogue's read and write of y (~0.2 ms in bf16 for all five layers):
// "never slower than cuDNN". LeNet's layers (K <= 150, ocg <= 16, or M = N
// for C5) are launch-bound on both sides: ours saves the separate bias and
// activation passes. float32 with TF32 allowed stays ours: TF32's 10-bit
// mantissa would miss the float32 tolerance (docs/DESIGN.md: ~1e-4) that callers
// rely on. The backward is always ours: deterministic (no atomics), the
// activation's gradient fused into its loads.
//
// Testing knob: LENETALEX_CONV_CUDA_KERNEL=direct|gemm forces the forward
// (no cuDNN; direct falls back to igemm where its tile does not fit shared
// memory, which _conv2d_activation_path reports), so tests run every shape
// through both kernels.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#include <ATen/Context.h>
#include <c10/core/ScalarType.h>

#include "common/ceil_div.h"
#include "cuda/conv2d_activation/direct.cuh"
#include "ops/conv2d_activation.h"

namespace lenetalex {
namespace conv_cuda {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr size_t kDirectSmemMax = 48 * 1024;    // no opt-in needed below this
constexpr size_t kDirectSmemChunk = 24 * 1024;  // aim for a few blocks per SM

enum class Path : int { None, CudnnEpilogue, Direct, Igemm, ColumnSums };

// The debug op's names.
inline const char* path_name(Path p) {
  switch (p) {
    case Path::CudnnEpilogue: return "cudnn_epilogue";
    case Path::Direct: return "direct";
    case Path::Igemm: return "igemm";
    case Path::ColumnSums: return "column_sums";
    default: return "none";
  }
}

enum class ForwardKernel { Auto, Direct, Gemm };

inline ForwardKernel forced_forward_kernel() {
  const char* v = std::getenv("LENETALEX_CONV_CUDA_KERNEL");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) return ForwardKernel::Auto;
  if (std::strcmp(v, "direct") == 0) return ForwardKernel::Direct;
  if (std::strcmp(v, "gemm") == 0) return ForwardKernel::Gemm;
  TORCH_CHECK_VALUE(false, "LENETALEX_CONV_CUDA_KERNEL must be 'auto', 'direct' or 'gemm', got '",
                    v, "'");
}

// See the table: cuDNN's convolution + our epilogue where tensor cores (or
// cuDNN's FP32) beat our SIMT implicit GEMM.
inline bool use_cudnn_forward(const Conv2dShape& s, c10::ScalarType dtype) {
  const bool big = s.n * s.oh * s.ow >= 4096 && s.ocg >= 64 && s.cg * s.kh * s.kw >= 256;
  if (!big) return false;
  if (dtype == c10::kHalf || dtype == c10::kBFloat16) return true;
  return dtype == c10::kFloat && !at::globalContext().allowTF32CuDNN();
}

// Tile shape and channel chunk of the direct kernel; false if it cannot run
// (its input tile for one channel does not fit shared memory) or, unless
// forced, if the layer is not LeNet-sized. acc_size: sizeof(acc_t).
inline bool plan_direct(const Conv2dShape& s, size_t acc_size, ForwardKernel forced,
                        DirectPlan& d) {
  if (forced == ForwardKernel::Gemm || s.cg == 0) return false;
  if (forced == ForwardKernel::Auto) {
    const bool lenet_sized = s.kh <= 7 && s.kw <= 7 && s.cg * s.kh * s.kw <= 512 &&
                             s.ocg <= 32 && s.oh * s.ow >= 64;
    if (!lenet_sized) return false;
  }
  d.tw = int(s.ow < 32 ? s.ow : 32);
  d.th = int(s.oh < 256 / d.tw ? s.oh : 256 / d.tw);
  const int64_t in_tw = (d.tw - 1) * s.sw + s.kw, in_th = (d.th - 1) * s.sh + s.kh;
  const int64_t per_channel = (in_tw * in_th + kOCB * s.kh * s.kw) * int64_t(acc_size);
  if (per_channel > int64_t(kDirectSmemMax)) return false;
  int64_t chunk = int64_t(kDirectSmemChunk) / per_channel;
  chunk = chunk < 1 ? 1 : (chunk > s.cg ? s.cg : chunk);
  d.in_tw = int(in_tw);
  d.in_th = int(in_th);
  d.ci_chunk = int(chunk);
  d.tiles_w = ceil_div(s.ow, d.tw);
  d.tiles = ceil_div(s.oh, d.th) * d.tiles_w;
  d.oc_blocks = ceil_div(s.ocg, kOCB);
  return s.n * s.groups * d.oc_blocks * d.tiles <= kInt32Max;
}

// The path of one part of a call; for a forward on the direct path, *direct
// (if given) receives its plan.
inline Path choose_path(const Conv2dShape& s, c10::ScalarType dtype, ConvPart part,
                        DirectPlan* direct = nullptr) {
  switch (part) {
    case ConvPart::Forward: {
      if (s.n * s.oc * s.oh * s.ow == 0) return Path::None;
      const ForwardKernel forced = forced_forward_kernel();
      if (forced == ForwardKernel::Auto && use_cudnn_forward(s, dtype)) return Path::CudnnEpilogue;
      DirectPlan d;
      const size_t acc_size = dtype == c10::kDouble ? 8 : 4;  // at::opmath_type
      if (!plan_direct(s, acc_size, forced, d)) return Path::Igemm;
      if (direct) *direct = d;
      return Path::Direct;
    }
    case ConvPart::GradInput: return s.n * s.c * s.h * s.w == 0 ? Path::None : Path::Igemm;
    case ConvPart::GradWeight: return s.oc * s.cg * s.kh * s.kw == 0 ? Path::None : Path::Igemm;
    default: return s.n == 0 || s.oc * s.oh * s.ow == 0 ? Path::None : Path::ColumnSums;
  }
}

}  // namespace conv_cuda
}  // namespace lenetalex
