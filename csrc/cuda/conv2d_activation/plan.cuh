// conv2d_activation on CUDA: which kernels run a call, and why. Every entry
// (conv2d_activation_cuda.cu: forward, backward, and the debug op
// _conv2d_activation_path) asks choose_path(); nothing else chooses.
//
// Forward, first rule that takes the call:
// | path           | takes                                                      | LeNet-5 / AlexNet shapes            |
// |----------------|------------------------------------------------------------|-------------------------------------|
// | none           | an empty output                                            |                                     |
// | cudnn_epilogue | large_layer(): per group M = N*OH*OW >= 4096, ocg >= 64,   | AlexNet conv1-5 at batch >= 2       |
// |                | K = cg*KH*KW >= 256; not float64. cuDNN's convolution,     | (conv1), >= 7 (conv2), >= 25 (3-5)  |
// |                | then our bias + activation in one pass                     |                                     |
// | direct         | "LeNet-sized": k <= 7, cg*KH*KW <= 512, ocg <= 32,         | LeNet C1, C3 (every dtype)          |
// |                | OH*OW >= 64, and one channel's input tile + filters fit    |                                     |
// |                | 48 KiB of shared memory (direct.cuh)                       |                                     |
// | igemm_mma      | the rest in float16/bfloat16 on sm_80+: the implicit GEMM  | LeNet C5; AlexNet's at small batch  |
// |                | on tensor cores (igemm_mma.cuh), bias + activation fused   |                                     |
// | cudnn_epilogue | the rest in float32 (and half types before sm_80)          | LeNet C5; AlexNet's at small batch  |
// | igemm          | the rest in float64: SIMT implicit GEMM (igemm.cuh), fused | float64 only                        |
// Backward, all three parts alike (one gpre pass serves them):
// | cudnn_prologue | float32/float16/bfloat16 with images: our pass writes gpre | every shape                         |
// |                | = gy * act'(y) and sums grad_bias (column sums, fixed      |                                     |
// |                | order), then cuDNN's convolution_backward for the rest     |                                     |
// | igemm,         | float64, an empty batch: grad_input, grad_weight as        | float64 only                        |
// | igemm_mma,     | implicit GEMMs (transposed conv; reduction over N*OH*OW;   |                                     |
// | column_sums    | split-K), grad_bias as column sums, gpre fused into their  |                                     |
// |                | loads; deterministic. _mma in half types, as the forward   |                                     |
// none: nothing is launched (an empty grad; grad_weight and grad_bias over no
// images are zero-filled).
//
// Why, by estimate (no GPU run yet; bench/results/gpu-roofline-estimate.md),
// H100 SXM: our SIMT igemm issues ~33% FFMA of 67 TFLOP/s, ~22 TFLOP/s, in
// every dtype; cuDNN reaches ~600-800 TFLOP/s of bf16/fp16 tensor cores,
// ~250-400 of TF32 and ~45-55 TFLOP/s of FP32 SIMT. AlexNet's 170 GFLOP
// forward at batch 128 is then ~7.7 ms ours against ~0.25 ms (bf16), ~0.5 ms
// (TF32) or ~3.5 ms (float32, TF32 off) plus the epilogue's read and write of
// y (~0.1 ms in bf16 for all five layers): "never slower than cuDNN".
// LeNet's C5 in float32 (M = batch, N = 120) fills 8 of 132 SMs with 64 x 64
// SIMT tiles: ~0.55x cuDNN + activation, so float32 GEMM work goes to cuDNN.
// The backward: our igemm pads LeNet's narrow GEMMs (1-16 channels, C5's
// grad_input gathers K = 3000 taps of which 120 are live) and pays 2-4
// integer divisions per gathered element, ~0.1-0.3x cuDNN in float32 and in
// half types; cuDNN after our gpre pass costs what PyTorch's eager backward
// costs (its activation backward writes the same gpre; our pass also sums
// grad_bias, which saves cuDNN's read of gpre for it): ~1.0x or better, and the
// forward's saved passes make forward+backward a win. So ours keeps the
// backward only in float64 (gradcheck; deterministic) and under the knob.
// The direct kernel keeps LeNet's C1/C3 forward in every dtype: K = 25 or 150
// and 6 or 16 output channels would fill a fraction of an m16n8k16 tile, and
// those layers are launch-bound; it saves PyTorch's separate bias and
// activation passes (~2-3x). Tensor cores (igemm_mma) in half types: the same
// gathers and epilogue as igemm with the FMAs on mma.sync (~4-5x igemm,
// gather-bound; LeNet C5 bf16 ~1.7x cuDNN + activation, which pays a second
// launch).
//
// TF32: float32 on the cudnn paths follows torch.backends.cudnn.allow_tf32
// (PyTorch's default: allowed), exactly as F.conv2d does, since it is cuDNN
// that runs; turn it off for float32 accuracy (docs/DESIGN.md: ~1e-4) there.
// Our own kernels never use TF32.
// Determinism: our kernels are deterministic (no atomics, fixed reduction
// orders). The cudnn paths are as deterministic as PyTorch's convolutions:
// torch.use_deterministic_algorithms(True) (or cudnn.deterministic) makes
// cuDNN pick deterministic algorithms, as for F.conv2d.
//
// Testing knob: LENETALEX_CONV_CUDA_KERNEL=direct|gemm forces our kernels,
// no cuDNN: the forward's (direct falls back to igemm where its tile does not
// fit shared memory, which _conv2d_activation_path reports) and the
// backward's, so tests run every shape through each of our kernels.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include "common/ceil_div.h"
#include "cuda/conv2d_activation/direct.cuh"
#include "cuda/launch.cuh"
#include "ops/conv2d_activation.h"

namespace lenetalex {
namespace conv_cuda {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr size_t kDirectSmemMax = 48 * 1024;    // no opt-in needed below this
constexpr size_t kDirectSmemChunk = 24 * 1024;  // aim for a few blocks per SM

enum class Path : int { None, CudnnEpilogue, CudnnPrologue, Direct, Igemm, IgemmMma, ColumnSums };

// The debug op's names.
inline const char* path_name(Path p) {
  switch (p) {
    case Path::CudnnEpilogue: return "cudnn_epilogue";
    case Path::CudnnPrologue: return "cudnn_prologue";
    case Path::Direct: return "direct";
    case Path::Igemm: return "igemm";
    case Path::IgemmMma: return "igemm_mma";
    case Path::ColumnSums: return "column_sums";
    default: return "none";
  }
}

enum class OurKernel { Auto, Direct, Gemm };

inline OurKernel forced_kernel() {
  const char* v = std::getenv("LENETALEX_CONV_CUDA_KERNEL");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) return OurKernel::Auto;
  if (std::strcmp(v, "direct") == 0) return OurKernel::Direct;
  if (std::strcmp(v, "gemm") == 0) return OurKernel::Gemm;
  TORCH_CHECK_VALUE(false, "LENETALEX_CONV_CUDA_KERNEL must be 'auto', 'direct' or 'gemm', got '",
                    v, "'");
}

// See the table: large layers take cuDNN (with our epilogue) in every dtype
// but float64 (cuDNN's is SIMT too; ours is deterministic, which gradcheck
// likes).
inline bool large_layer(const Conv2dShape& s) {
  return s.n * s.oh * s.ow >= 4096 && s.ocg >= 64 && s.cg * s.kh * s.kw >= 256;
}

// The implicit GEMM for this dtype and device: on tensor cores in half types
// where the GPU has mma.sync (the emulator runs mma.cuh's SIMT twin).
inline Path gemm_path(const at::Tensor& input) {
  const c10::ScalarType dtype = input.scalar_type();
  if (dtype != c10::kHalf && dtype != c10::kBFloat16) return Path::Igemm;
#if defined(LENETALEX_CUDA_EMU)
  return Path::IgemmMma;
#else
  int major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor,
                                        input.device().index()));
  return major >= 8 ? Path::IgemmMma : Path::Igemm;
#endif
}

// The forward below large and LeNet-sized layers: tensor cores in half types,
// cuDNN in float32 (see the table's why), our SIMT GEMM in float64.
inline Path rest_forward(const at::Tensor& input) {
  const Path gemm = gemm_path(input);
  if (gemm == Path::IgemmMma || input.scalar_type() == c10::kDouble) return gemm;
  return Path::CudnnEpilogue;
}

// The backward's parts all take cuDNN or all ours (one gpre pass serves them).
inline bool cudnn_backward(const Conv2dShape& s, c10::ScalarType dtype) {
  return forced_kernel() == OurKernel::Auto && dtype != c10::kDouble && s.n > 0;
}

// Tile shape and channel chunk of the direct kernel; false if it cannot run
// (its input tile for one channel does not fit shared memory) or, unless
// forced, if the layer is not LeNet-sized. acc_size: sizeof(acc_t).
inline bool plan_direct(const Conv2dShape& s, size_t acc_size, OurKernel forced,
                        DirectPlan& d) {
  if (forced == OurKernel::Gemm || s.cg == 0) return false;
  if (forced == OurKernel::Auto) {
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

// The path of one part of a call on input's dtype and device; for a forward
// on the direct path, *direct (if given) receives its plan.
inline Path choose_path(const Conv2dShape& s, const at::Tensor& input, ConvPart part,
                        DirectPlan* direct = nullptr) {
  const c10::ScalarType dtype = input.scalar_type();
  switch (part) {
    case ConvPart::Forward: {
      if (s.n * s.oc * s.oh * s.ow == 0) return Path::None;
      const OurKernel forced = forced_kernel();
      if (forced == OurKernel::Auto && dtype != c10::kDouble && large_layer(s))
        return Path::CudnnEpilogue;
      DirectPlan d;
      const size_t acc_size = dtype == c10::kDouble ? 8 : 4;  // at::opmath_type
      if (!plan_direct(s, acc_size, forced, d))
        return forced == OurKernel::Auto ? rest_forward(input) : gemm_path(input);
      if (direct) *direct = d;
      return Path::Direct;
    }
    case ConvPart::GradInput:
      if (s.n * s.c * s.h * s.w == 0) return Path::None;
      return cudnn_backward(s, dtype) ? Path::CudnnPrologue : gemm_path(input);
    case ConvPart::GradWeight:
      if (s.oc * s.cg * s.kh * s.kw == 0) return Path::None;
      return cudnn_backward(s, dtype) ? Path::CudnnPrologue : gemm_path(input);
    default:
      if (s.n == 0 || s.oc * s.oh * s.ow == 0) return Path::None;
      return cudnn_backward(s, dtype) ? Path::CudnnPrologue : Path::ColumnSums;
  }
}

}  // namespace conv_cuda
}  // namespace lenetalex
