// conv2d_activation on CUDA: forward and backward.
//
// Forward: the activation is the epilogue of the convolution kernel itself.
//   - direct kernel (conv2d_activation_direct.cuh) for LeNet-sized layers:
//     filters up to 7 x 7, cg * KH * KW <= 512, at most 32 output channels per
//     group and at least 64 output pixels per image;
//   - tiled implicit GEMM (conv2d_activation_igemm.cuh) for everything else
//     (AlexNet's layers, LeNet's C5 with its 1 x 1 output).
// Backward (its own op): gpre = grad_output * act'(output) is fused into the
// loads of three kernels, each deterministic (no atomics):
//   - grad_input:  implicit GEMM of the transposed conv (gather over outputs);
//   - grad_weight: implicit GEMM reducing over N*OH*OW, split-K into fixed
//     chunks (a function of the shape only) written to a float workspace, then
//     summed in chunk order by sum_splits_kernel;
//   - grad_bias:   one block per channel, fixed thread assignment, tree reduction.
// All kernels accumulate in at::opmath_type (float; double for float64).
//
// Testing knob: LENETALEX_CONV_CUDA_KERNEL=direct|gemm forces the forward's
// kernel choice (direct falls back to gemm where its tiles don't fit shared
// memory), so tests can run every shape through both kernels.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "cuda/launch.cuh"
#include "common/activation.h"
#include "common/grads.h"
#include "cuda/conv2d_activation_direct.cuh"
#include "cuda/conv2d_activation_igemm.cuh"
#include "cuda/conv2d_activation_problems.cuh"
#include "ops/conv2d_activation.h"

namespace lenetalex {
namespace conv_cuda {
namespace {

constexpr const char* kOp = "conv2d_activation";
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t kGridYZMax = 65535;
// grad_weight's split-K aims at this many blocks; a function of the shape only,
// so the summation order (and the result, bit for bit) is the same on any GPU.
constexpr int64_t kTargetBlocks = 512;
constexpr size_t kDirectSmemMax = 48 * 1024;   // no opt-in needed below this
constexpr size_t kDirectSmemChunk = 24 * 1024;  // aim for a few blocks per SM

// ---------------------------------------------------------------------------
// Small kernels: grad_bias and the split-K finish.

// gb[oc] = sum over n, p of gpre[n, oc, p]. Thread t sums the elements
// t, t + 256, ... then the block reduces in a fixed tree: deterministic.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    grad_bias_kernel(const scalar_t* gy, const scalar_t* y, scalar_t* gb, int64_t n_img,
                     int64_t oc_n, int64_t P, Activation act) {
  using acc_t = at::opmath_type<scalar_t>;
  LENETALEX_SHARED(acc_t, red, [kThreads]);
  const int64_t oc = blockIdx.x;
  acc_t acc = 0;
  for (int64_t r = threadIdx.x; r < n_img * P; r += kThreads) {
    const int64_t n = r / P, pix = r - n * P;
    acc += pre_activation_grad<acc_t>(gy, y, (n * oc_n + oc) * P + pix, act);
  }
  red[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) red[threadIdx.x] += red[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) gb[oc] = static_cast<scalar_t>(red[0]);
}

// out[i] = sum over splits s, in order, of ws[s][i].
template <typename scalar_t, typename acc_t>
__global__ void sum_splits_kernel(const acc_t* ws, scalar_t* out, int64_t numel,
                                  int64_t splits) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    acc_t acc = 0;
    for (int64_t sp = 0; sp < splits; ++sp) acc += ws[sp * numel + i];
    out[i] = static_cast<scalar_t>(acc);
  }
}

// ---------------------------------------------------------------------------
// Host helpers.

// The kernels divide indices within one filter or one image plane in int;
// everything spanning the batch is int64.
void check_cuda_limits(const Conv2dShape& s) {
  TORCH_CHECK_VALUE(s.cg * s.kh * s.kw <= kInt32Max && s.ocg * s.kh * s.kw <= kInt32Max, kOp,
                    ": filter too large for the CUDA kernels (in_channels/groups * kH * kW = ",
                    s.cg * s.kh * s.kw, ")");
  TORCH_CHECK_VALUE(s.h * s.w <= kInt32Max && s.oh * s.ow <= kInt32Max &&
                        s.h + s.ph <= kInt32Max && s.w + s.pw <= kInt32Max &&
                        s.sh <= kInt32Max && s.sw <= kInt32Max,
                    kOp, ": image plane too large for the CUDA kernels (input ", s.h, " x ", s.w,
                    ", padding ", s.ph, ", ", s.pw, ", stride ", s.sh, ", ", s.sw, ")");
  TORCH_CHECK_VALUE(s.groups <= kGridYZMax, kOp, ": at most ", kGridYZMax,
                    " groups are supported on CUDA, got ", s.groups);
}

template <typename Problem>
void launch_igemm(const Problem& p, int64_t M, int64_t N, int64_t K, int64_t groups,
                  int64_t splits, int64_t k_chunk, cudaStream_t stream) {
  const int64_t m_tiles = ceil_div(M, kBM), n_tiles = ceil_div(N, kBN);
  TORCH_CHECK(m_tiles >= 1 && n_tiles >= 1 && splits >= 1, kOp, ": empty GEMM launched");
  TORCH_CHECK_VALUE(m_tiles <= kInt32Max && n_tiles * splits <= kGridYZMax, kOp,
                    ": shape too large for the CUDA grid (", m_tiles, " x ", n_tiles * splits,
                    " tiles)");
  const dim3 grid(unsigned(m_tiles), unsigned(n_tiles * splits), unsigned(groups));
  launch_bounded<kThreads>(igemm_kernel<Problem>, grid, kThreads, 0, stream, p, M, N, K, k_chunk,
                           n_tiles);
}

enum class ForwardKernel { Auto, Direct, Gemm };

ForwardKernel forced_forward_kernel() {
  const char* v = std::getenv("LENETALEX_CONV_CUDA_KERNEL");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) return ForwardKernel::Auto;
  if (std::strcmp(v, "direct") == 0) return ForwardKernel::Direct;
  if (std::strcmp(v, "gemm") == 0) return ForwardKernel::Gemm;
  TORCH_CHECK_VALUE(false, "LENETALEX_CONV_CUDA_KERNEL must be 'auto', 'direct' or 'gemm', got '",
                    v, "'");
}

// Tile shape and channel chunk of the direct kernel; false if it cannot run
// (its input tile for one channel does not fit shared memory) or, unless
// forced, if the layer is not LeNet-sized.
bool plan_direct(const Conv2dShape& s, size_t acc_size, DirectPlan& d) {
  const ForwardKernel forced = forced_forward_kernel();
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

// ---------------------------------------------------------------------------
// The ops.

at::Tensor conv2d_activation_cuda(const at::Tensor& input, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                  at::IntArrayRef padding, int64_t groups,
                                  c10::string_view activation) {
  const Conv2dShape s =
      check_conv2d_activation(input, weight, bias, stride, padding, groups, Backend::Cuda);
  const Activation act = parse_activation(activation);
  check_cuda_limits(s);
  c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  at::Tensor y = at::empty({s.n, s.oc, s.oh, s.ow}, input.options());
  if (y.numel() == 0) return y;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "conv2d_activation_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* bp = has_bias ? b.const_data_ptr<scalar_t>() : nullptr;
    DirectPlan d;
    if (plan_direct(s, sizeof(acc_t), d)) {
      const size_t smem =
          size_t(d.ci_chunk) * (d.in_th * d.in_tw + kOCB * s.kh * s.kw) * sizeof(acc_t);
      const int64_t blocks = s.n * s.groups * d.oc_blocks * d.tiles;
      launch(direct_forward_kernel<scalar_t>, unsigned(blocks), dim3(d.tw, d.th), smem, stream,
          x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), bp,
          y.mutable_data_ptr<scalar_t>(), s, d, act);
      return;
    }
    ForwardProblem<scalar_t> p;
    p.x = x.const_data_ptr<scalar_t>();
    p.w = w.const_data_ptr<scalar_t>();
    p.b = bp;
    p.y = y.mutable_data_ptr<scalar_t>();
    p.s = s;
    p.act = act;
    p.P = s.oh * s.ow;
    p.K = s.cg * s.kh * s.kw;
    p.kk = int(s.kh * s.kw);
    p.kw = int(s.kw);
    launch_igemm(p, s.n * p.P, s.ocg, p.K, s.groups, 1, p.K, stream);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_activation_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& output, const at::Tensor& input,
    const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  const Conv2dShape s =
      check_conv2d_activation_backward(grad_output, output, input, weight, stride, padding, groups,
                                       Backend::Cuda);
  const Activation act = parse_activation(activation);
  check_cuda_limits(s);
  c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor gy = grad_output.contiguous(), y = output.contiguous();
  // x feeds only grad_weight, w only grad_input: copied only when they are asked for.
  const at::Tensor x = output_mask[1] ? input.contiguous() : input;
  const at::Tensor w = output_mask[0] ? weight.contiguous() : weight;
  const auto opts = input.options();
  at::Tensor gx = grad_or_empty(output_mask[0], {s.n, s.c, s.h, s.w}, opts);
  at::Tensor gw = grad_or_empty(output_mask[1], weight.sizes(), opts);
  at::Tensor gb = grad_or_empty(output_mask[2], {s.oc}, opts);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t P = s.oh * s.ow, HW = s.h * s.w, kk = s.kh * s.kw;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "conv2d_activation_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (output_mask[0] && gx.numel() > 0) {
      GradInputProblem<scalar_t> p;
      p.gy = gy.const_data_ptr<scalar_t>();
      p.y = y.const_data_ptr<scalar_t>();
      p.w = w.const_data_ptr<scalar_t>();
      p.gx = gx.mutable_data_ptr<scalar_t>();
      p.s = s;
      p.act = act;
      p.P = P;
      p.HW = HW;
      p.kk = int(kk);
      p.kw = int(s.kw);
      launch_igemm(p, s.n * HW, s.cg, s.ocg * kk, s.groups, 1, s.ocg * kk, stream);
    }
    if (output_mask[1] && gw.numel() > 0) {
      // Reduction over R = N*OH*OW, split into `splits` chunks of k_chunk.
      const int64_t Kw = s.cg * kk, R = s.n * P;
      const int64_t n_tiles = ceil_div(s.ocg, kBN);
      const int64_t tiles = ceil_div(Kw, kBM) * n_tiles * s.groups;
      int64_t splits = ceil_div(kTargetBlocks, tiles);
      const int64_t max_splits = ceil_div(R, 8 * kBK);  // each chunk >= 8 K steps
      splits = splits < max_splits ? splits : max_splits;
      splits = splits < kGridYZMax / n_tiles ? splits : kGridYZMax / n_tiles;
      splits = splits < 1 ? 1 : splits;
      const int64_t k_chunk = ceil_div(ceil_div(R, splits), kBK) * kBK;
      if (k_chunk > 0) splits = ceil_div(R, k_chunk);  // no empty chunks
      else splits = 1;                                 // empty batch: one pass writes zeros
      at::Tensor ws;
      GradWeightProblem<scalar_t> p;
      p.gy = gy.const_data_ptr<scalar_t>();
      p.y = y.const_data_ptr<scalar_t>();
      p.x = x.const_data_ptr<scalar_t>();
      p.gw = gw.mutable_data_ptr<scalar_t>();
      p.ws = nullptr;
      if (splits > 1) {
        ws = at::empty({splits, gw.numel()}, opts.dtype(c10::CppTypeToScalarType<acc_t>::value));
        p.ws = ws.mutable_data_ptr<acc_t>();
      }
      p.s = s;
      p.act = act;
      p.P = P;
      p.HW = HW;
      p.Kw = Kw;
      p.kk = int(kk);
      p.kw = int(s.kw);
      launch_igemm(p, Kw, s.ocg, R, s.groups, splits, k_chunk, stream);
      if (splits > 1) {
        const int64_t numel = gw.numel();
        const int64_t blocks = std::min<int64_t>(ceil_div(numel, kThreads), 4096);
        launch(sum_splits_kernel<scalar_t, acc_t>, unsigned(blocks), kThreads, 0, stream,
            p.ws, gw.mutable_data_ptr<scalar_t>(), numel, splits);
      }
    }
    if (output_mask[2]) {  // gb has oc >= 1 elements
      TORCH_CHECK_VALUE(s.oc <= kInt32Max, kOp, ": too many output channels for the CUDA grid");
      launch_bounded<kThreads>(grad_bias_kernel<scalar_t>, unsigned(s.oc), kThreads, 0, stream,
          gy.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
          gb.mutable_data_ptr<scalar_t>(), s.n, s.oc, P, act);
    }
  });
  return {gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(LENETALEX_NS, LENETALEX_CUDA_KEY, m) {
  m.impl("conv2d_activation", &conv2d_activation_cuda);
  m.impl("conv2d_activation_backward", &conv2d_activation_backward_cuda);
}

}  // namespace conv_cuda
}  // namespace lenetalex
