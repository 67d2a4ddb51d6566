// conv2d_activation on CUDA: forward and backward.
//
// Forward: the activation is the epilogue of the convolution kernel itself.
//   - direct kernel (conv2d_activation/direct.cuh) for LeNet-sized layers:
//     filters up to 7 x 7, cg * KH * KW <= 512, at most 32 output channels per
//     group and at least 64 output pixels per image;
//   - tiled implicit GEMM (conv2d_activation/igemm.cuh; igemm_mma.cuh on tensor
//     cores in half types) for everything else
//     (LeNet's C5 with its 1 x 1 output, AlexNet's layers at small batch);
//   - large layers (AlexNet's at batch): cuDNN's convolution, then our bias
//     + activation in one pass (bias_activation_kernel).
// Backward (its own op): in float32 and half types, one pass of ours forms
// gpre = grad_output * act'(output) and grad_bias, then cuDNN's
// convolution_backward grad_input and grad_weight. In float64 (and under the
// testing knob) gpre is fused into the loads of three kernels, each
// deterministic (no atomics):
//   - grad_input:  implicit GEMM of the transposed conv (gather over outputs);
//   - grad_weight: implicit GEMM reducing over N*OH*OW;
//     both split their reduction (K) into fixed chunks when the tiles alone
//     would not fill the GPU (a function of the shape only), written to a
//     float workspace, then summed in chunk order by sum_splits_kernel; both
//     take the tile (64 x 64, 128 x 32 or 256 x 16) that pads their narrow
//     side least (LeNet: 1..16 channels);
//   - grad_bias:   two passes: column sums of gpre over chunks of images
//     (one thread per (channel, pixel) column, coalesced whatever OH*OW is),
//     then per channel a fixed-order sum of its columns' partials.
// All kernels accumulate in at::opmath_type (float; double for float64).
//
// Which kernels run which shapes, and why (cuDNN for large layers, TF32,
// determinism; the testing knob LENETALEX_CONV_CUDA_KERNEL):
// conv2d_activation/plan.cuh, whose choose_path every entry here asks.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <string>

#include "cuda/launch.cuh"
#include "common/activation.h"
#include "common/grads.h"
#include "cuda/conv2d_activation/direct.cuh"
#include "cuda/conv2d_activation/igemm.cuh"
#include "cuda/conv2d_activation/igemm_mma.cuh"
#include "cuda/conv2d_activation/plan.cuh"
#include "cuda/conv2d_activation/problems.cuh"
#include "ops/conv2d_activation.h"

namespace lenetalex {
namespace conv_cuda {
namespace {

constexpr const char* kOp = "conv2d_activation";
constexpr int64_t kGridYZMax = 65535;
// grad_weight's split-K aims at this many blocks; a function of the shape only,
// so the summation order (and the result, bit for bit) is the same on any GPU.
constexpr int64_t kTargetBlocks = 512;
// grad_bias's first pass aims at this many threads (one per column and chunk
// of images); its second pass then reads at most about this many partials
// beyond one row of columns.
constexpr int64_t kBiasThreads = 64 * 1024;

// ---------------------------------------------------------------------------
// Small kernels: grad_bias and the split-K finish.

// grad_bias, pass 1, and the cudnn path's prologue: over the columns q =
// (oc, pixel) of the (N, OC*P) matrix gpre = gy * act'(y), thread q of
// chunk blockIdx.y takes the images of its chunk in order, storing each gpre
// (if gpre) and summing them into partial[chunk][q] (if partial). Threads
// take consecutive columns, so a warp reads (and writes) 32 consecutive
// elements for any OH*OW (LeNet's C5 has P = 1).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    pre_activation_columns_kernel(const scalar_t* __restrict__ gy,
                                  const scalar_t* __restrict__ y, scalar_t* __restrict__ gpre,
                                  at::opmath_type<scalar_t>* __restrict__ partial,
                                  int64_t n_img, int64_t cols, int64_t rows_per_chunk,
                                  Activation act) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t q = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (q >= cols) return;
  const int64_t n0 = int64_t(blockIdx.y) * rows_per_chunk;
  const int64_t n1 = n0 + rows_per_chunk < n_img ? n0 + rows_per_chunk : n_img;
  acc_t acc = 0;
  for (int64_t n = n0; n < n1; ++n) {
    const acc_t v = pre_activation_grad<acc_t>(gy, y, n * cols + q, act);
    if (gpre != nullptr) gpre[n * cols + q] = static_cast<scalar_t>(v);
    acc += v;
  }
  if (partial != nullptr) partial[int64_t(blockIdx.y) * cols + q] = acc;
}

// grad_bias, pass 2: gb[oc] = sum of partial[chunk][oc * P + p] over (chunk,
// p). Thread t sums the elements t, t + 256, ... of that list, then the block
// reduces in a fixed tree: deterministic. Block oc = blockIdx.x.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    grad_bias_finish_kernel(const at::opmath_type<scalar_t>* __restrict__ partial,
                            scalar_t* __restrict__ gb, int64_t chunks, int64_t cols, int64_t P) {
  using acc_t = at::opmath_type<scalar_t>;
  LENETALEX_SHARED(acc_t, red, [kThreads]);
  const int64_t oc = blockIdx.x;
  acc_t acc = 0;
  for (int64_t e = threadIdx.x; e < chunks * P; e += kThreads) {
    const int64_t chunk = e / P, pix = e - chunk * P;
    acc += partial[chunk * cols + oc * P + pix];
  }
  red[threadIdx.x] = acc;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) red[threadIdx.x] += red[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) gb[oc] = static_cast<scalar_t>(red[0]);
}

// y = act(y + bias[c]) in place, y (planes = N*OC, P) contiguous: the
// epilogue of a cuDNN convolution. Blocks stride over planes (one bias value
// each), threads over a plane's P elements: no division per element.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    bias_activation_kernel(scalar_t* __restrict__ y, const scalar_t* __restrict__ b,
                           int64_t planes, int64_t oc, int64_t P, Activation act) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t plane = blockIdx.y * int64_t(gridDim.x) + blockIdx.x; plane < planes;
       plane += int64_t(gridDim.x) * gridDim.y) {
    const acc_t shift = b != nullptr ? static_cast<acc_t>(b[plane % oc]) : acc_t(0);
    scalar_t* row = y + plane * P;
    for (int64_t i = threadIdx.x; i < P; i += kThreads)
      row[i] = static_cast<scalar_t>(activation_forward<acc_t>(act, static_cast<acc_t>(row[i]) + shift));
  }
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

// out = the split-K workspace ws (splits x out.numel(), acc_t) summed in split order.
template <typename scalar_t, typename acc_t>
void sum_splits(const acc_t* ws, at::Tensor& out, int64_t splits, cudaStream_t stream) {
  const int64_t numel = out.numel();
  const int64_t blocks = std::min<int64_t>(ceil_div(numel, kThreads), 4096);
  launch(sum_splits_kernel<scalar_t, acc_t>, unsigned(blocks), kThreads, 0, stream, ws,
         out.mutable_data_ptr<scalar_t>(), numel, splits);
}

// The columns pass (pre_activation_columns_kernel) over gy and y, then, if
// gb is given, grad_bias's pass 2 into it; gpre, if given, receives gy *
// act'(y). Chunks of images: about kBiasThreads threads, at most one chunk per
// image; a function of the shape only (determinism). Needs s.n >= 1.
template <typename scalar_t>
void pre_activation_columns(const at::Tensor& gy, const at::Tensor& y, at::Tensor* gpre,
                            at::Tensor* gb, const Conv2dShape& s, Activation act,
                            cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  TORCH_CHECK_VALUE(s.oc <= kInt32Max, kOp, ": too many output channels for the CUDA grid");
  const int64_t P = s.oh * s.ow, cols = s.oc * P;
  int64_t chunks = ceil_div(kBiasThreads, cols);
  chunks = std::clamp<int64_t>(chunks, 1, std::min(s.n, kGridYZMax));
  const int64_t rows_per_chunk = ceil_div(s.n, chunks);
  chunks = ceil_div(s.n, rows_per_chunk);
  const int64_t col_blocks = ceil_div(cols, kThreads);
  TORCH_CHECK_VALUE(col_blocks <= kInt32Max, kOp, ": output too large for the CUDA grid");
  at::Tensor partial;
  if (gb != nullptr)
    partial = at::empty({chunks, cols}, gy.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  launch_bounded<kThreads>(pre_activation_columns_kernel<scalar_t>,
      dim3(unsigned(col_blocks), unsigned(chunks)), kThreads, 0, stream,
      gy.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
      gpre != nullptr ? gpre->mutable_data_ptr<scalar_t>() : nullptr,
      gb != nullptr ? partial.mutable_data_ptr<acc_t>() : nullptr, s.n, cols, rows_per_chunk,
      act);
  if (gb != nullptr)
    launch_bounded<kThreads>(grad_bias_finish_kernel<scalar_t>, unsigned(s.oc), kThreads, 0,
        stream, partial.const_data_ptr<acc_t>(), gb->mutable_data_ptr<scalar_t>(), chunks, cols,
        P);
}

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

// The backward's tile: the narrowest N side (16, 32 or 64, BM = 4096 / BN)
// whose padded C area is least, ties to the wider (fewer gather loads of A
// per FMA). A function of (M, N) only.
int pick_bn(int64_t M, int64_t N) {
  int best = 64;
  int64_t best_area = ceil_div(M, kTileArea / 64) * (kTileArea / 64) * ceil_div(N, 64) * 64;
  for (int bn : {32, 16}) {
    const int64_t bm = kTileArea / bn;
    const int64_t area = ceil_div(M, bm) * bm * ceil_div(N, bn) * bn;
    if (area < best_area) best = bn, best_area = area;
  }
  return best;
}

// The implicit GEMM's kernel and tile for a path: on tensor cores (igemm_mma)
// 64 x BN with the narrowest BN of 16, 32, 64 that covers N (else 64); SIMT
// (igemm) pick_bn's. A function of the path and shape only.
struct GemmTile {
  bool mma;
  int bm, bn;
};
GemmTile pick_tile(Path path, int64_t M, int64_t N) {
  if (path == Path::IgemmMma) return {true, kMmaBM, N <= 16 ? 16 : N <= 32 ? 32 : 64};
  const int bn = pick_bn(M, N);
  return {false, kTileArea / bn, bn};
}

template <typename scalar_t, typename Problem, int BN>
void launch_gemm_tile(const Problem& p, const GemmTile& t, int64_t M, int64_t N, int64_t K,
                      int64_t groups, int64_t splits, int64_t k_chunk, cudaStream_t stream) {
  const int64_t m_tiles = ceil_div(M, t.bm), n_tiles = ceil_div(N, BN);
  TORCH_CHECK(m_tiles >= 1 && n_tiles >= 1 && splits >= 1, kOp, ": empty GEMM launched");
  TORCH_CHECK_VALUE(m_tiles <= kInt32Max && n_tiles * splits <= kGridYZMax, kOp,
                    ": shape too large for the CUDA grid (", m_tiles, " x ", n_tiles * splits,
                    " tiles)");
  const dim3 grid(unsigned(m_tiles), unsigned(n_tiles * splits), unsigned(groups));
  if constexpr (kHasMma<scalar_t>) {
    if (t.mma) {
      launch_bounded<kMmaThreads>(igemm_mma_kernel<Problem, scalar_t, BN>, grid, kMmaThreads, 0,
                                  stream, p, M, N, K, k_chunk, n_tiles);
      return;
    }
  }
  TORCH_CHECK(!t.mma, kOp, ": tensor-core GEMM asked for a dtype without one");
  launch_bounded<kThreads>(igemm_kernel<Problem, BN>, grid, kThreads, 0, stream, p, M, N, K,
                           k_chunk, n_tiles);
}

template <typename scalar_t, typename Problem>
void launch_gemm(const Problem& p, const GemmTile& t, int64_t M, int64_t N, int64_t K,
                 int64_t groups, int64_t splits, int64_t k_chunk, cudaStream_t stream) {
  if (t.bn == 16) launch_gemm_tile<scalar_t, Problem, 16>(p, t, M, N, K, groups, splits, k_chunk, stream);
  else if (t.bn == 32) launch_gemm_tile<scalar_t, Problem, 32>(p, t, M, N, K, groups, splits, k_chunk, stream);
  else launch_gemm_tile<scalar_t, Problem, 64>(p, t, M, N, K, groups, splits, k_chunk, stream);
}

// Split-K for a backward GEMM: enough chunks of the reduction to reach about
// kTargetBlocks blocks, each chunk at least 8 K steps, the grid's y within
// CUDA's limit. A function of the shape only, so the summation order (and the
// result, bit for bit) is the same on any GPU.
struct SplitK {
  int64_t splits, k_chunk;
};
SplitK plan_split_k(int64_t tiles, int64_t n_tiles, int64_t K) {
  int64_t splits = ceil_div(kTargetBlocks, tiles);
  const int64_t max_splits = ceil_div(K, 8 * kBK);
  splits = splits < max_splits ? splits : max_splits;
  splits = splits < kGridYZMax / n_tiles ? splits : kGridYZMax / n_tiles;
  splits = splits < 1 ? 1 : splits;
  const int64_t k_chunk = ceil_div(ceil_div(K, splits), kBK) * kBK;
  if (k_chunk > 0) return {ceil_div(K, k_chunk), k_chunk};  // no empty chunks
  return {1, 0};  // empty reduction (empty batch): one pass writes zeros
}

// The cudnn_prologue path of the backward (plan.cuh): our columns pass forms
// gpre and, in the same pass, grad_bias (so nothing reads gpre a second time
// for it); then ATen's convolution_backward (cuDNN on a GPU) computes
// grad_input and grad_weight from gpre. Grads not asked for come back as the
// entries' empty tensors. Needs s.n >= 1.
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cudnn(
    const at::Tensor& gy, const at::Tensor& y, const at::Tensor& x, const at::Tensor& w,
    const Conv2dShape& s, Activation act, std::array<bool, 3> mask, cudaStream_t stream) {
  const auto opts = gy.options();
  const bool conv_grads = mask[0] || mask[1];
  at::Tensor gpre = conv_grads ? at::empty_like(gy) : at::Tensor();
  at::Tensor gb = grad_or_empty(mask[2], {s.oc}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gy.scalar_type(),
                                  "conv2d_activation_cuda_prologue", [&] {
    pre_activation_columns<scalar_t>(gy, y, conv_grads ? &gpre : nullptr, mask[2] ? &gb : nullptr,
                                     s, act, stream);
  });
  if (!conv_grads) return {at::empty({0}, opts), at::empty({0}, opts), gb};
  auto grads = at::convolution_backward(gpre, x, w, c10::nullopt, {s.sh, s.sw}, {s.ph, s.pw},
                                        {1, 1}, false, {0, 0}, s.groups,
                                        {mask[0], mask[1], false});
  return {grad_or_empty(mask[0], std::get<0>(grads), opts),
          grad_or_empty(mask[1], std::get<1>(grads), opts), gb};
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
  DirectPlan d;
  const Path path = choose_path(s, input, ConvPart::Forward, &d);
  if (path == Path::None) return y;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (path == Path::CudnnEpilogue) {
    y = at::convolution(x, w, c10::nullopt, {s.sh, s.sw}, {s.ph, s.pw}, {1, 1}, false, {0, 0},
                        s.groups).contiguous();
    const int64_t planes = s.n * s.oc;
    const dim3 grid(unsigned(std::min<int64_t>(planes, 65535)),
                    unsigned(std::min<int64_t>(ceil_div(planes, 65535), 65535)));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                    "conv2d_activation_cuda_epilogue", [&] {
      launch_bounded<kThreads>(bias_activation_kernel<scalar_t>, grid, kThreads, 0, stream,
          y.mutable_data_ptr<scalar_t>(), has_bias ? b.const_data_ptr<scalar_t>() : nullptr,
          planes, s.oc, s.oh * s.ow, act);
    });
    return y;
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "conv2d_activation_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* bp = has_bias ? b.const_data_ptr<scalar_t>() : nullptr;
    if (path == Path::Direct) {
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
    const int64_t M = s.n * p.P;
    launch_gemm<scalar_t>(p, pick_tile(path, M, s.ocg), M, s.ocg, p.K, s.groups, 1, p.K, stream);
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
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (cudnn_backward(s, input.scalar_type()))  // plan.cuh: every part, or none
    return backward_cudnn(gy, y, input, weight, s, act, output_mask, stream);
  // x feeds only grad_weight, w only grad_input: copied only when they are asked for.
  const at::Tensor x = output_mask[1] ? input.contiguous() : input;
  const at::Tensor w = output_mask[0] ? weight.contiguous() : weight;
  const auto opts = input.options();
  at::Tensor gx = grad_or_empty(output_mask[0], {s.n, s.c, s.h, s.w}, opts);
  at::Tensor gw = grad_or_empty(output_mask[1], weight.sizes(), opts);
  at::Tensor gb = grad_or_empty(output_mask[2], {s.oc}, opts);
  const int64_t P = s.oh * s.ow, HW = s.h * s.w, kk = s.kh * s.kw;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "conv2d_activation_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Path gx_path = choose_path(s, input, ConvPart::GradInput);
    if (output_mask[0] && gx_path != Path::None) {
      const int64_t M = s.n * HW, K = s.ocg * kk;
      const GemmTile t = pick_tile(gx_path, M, s.cg);
      const int64_t n_tiles = ceil_div(s.cg, t.bn);
      const SplitK sk = plan_split_k(ceil_div(M, t.bm) * n_tiles * s.groups, n_tiles, K);
      at::Tensor ws;
      GradInputProblem<scalar_t> p;
      p.gy = gy.const_data_ptr<scalar_t>();
      p.y = y.const_data_ptr<scalar_t>();
      p.w = w.const_data_ptr<scalar_t>();
      p.gx = gx.mutable_data_ptr<scalar_t>();
      p.ws = nullptr;
      if (sk.splits > 1) {
        ws = at::empty({sk.splits, gx.numel()}, opts.dtype(c10::CppTypeToScalarType<acc_t>::value));
        p.ws = ws.mutable_data_ptr<acc_t>();
      }
      p.s = s;
      p.act = act;
      p.P = P;
      p.HW = HW;
      p.numel = gx.numel();
      p.kk = int(kk);
      p.kw = int(s.kw);
      launch_gemm<scalar_t>(p, t, M, s.cg, K, s.groups, sk.splits, sk.k_chunk, stream);
      if (sk.splits > 1) sum_splits<scalar_t>(p.ws, gx, sk.splits, stream);
    }
    const Path gw_path = choose_path(s, input, ConvPart::GradWeight);
    if (output_mask[1] && gw_path != Path::None) {
      // Reduction over R = N*OH*OW.
      const int64_t Kw = s.cg * kk, R = s.n * P;
      const GemmTile t = pick_tile(gw_path, Kw, s.ocg);
      const int64_t n_tiles = ceil_div(s.ocg, t.bn);
      const SplitK sk = plan_split_k(ceil_div(Kw, t.bm) * n_tiles * s.groups, n_tiles, R);
      at::Tensor ws;
      GradWeightProblem<scalar_t> p;
      p.gy = gy.const_data_ptr<scalar_t>();
      p.y = y.const_data_ptr<scalar_t>();
      p.x = x.const_data_ptr<scalar_t>();
      p.gw = gw.mutable_data_ptr<scalar_t>();
      p.ws = nullptr;
      if (sk.splits > 1) {
        ws = at::empty({sk.splits, gw.numel()}, opts.dtype(c10::CppTypeToScalarType<acc_t>::value));
        p.ws = ws.mutable_data_ptr<acc_t>();
      }
      p.s = s;
      p.act = act;
      p.P = P;
      p.HW = HW;
      p.Kw = Kw;
      p.kk = int(kk);
      p.kw = int(s.kw);
      launch_gemm<scalar_t>(p, t, Kw, s.ocg, R, s.groups, sk.splits, sk.k_chunk, stream);
      if (sk.splits > 1) sum_splits<scalar_t>(p.ws, gw, sk.splits, stream);
    }
    if (output_mask[2]) {  // gb has oc >= 1 elements
      if (choose_path(s, input, ConvPart::GradBias) == Path::None) {
        gb.zero_();  // an empty sum
      } else {
        pre_activation_columns<scalar_t>(gy, y, nullptr, &gb, s, act, stream);
      }
    }
  });
  return {gx, gw, gb};
}

// The debug op: the path the entries above take for such a call (plan.cuh).
std::string conv2d_activation_path_cuda(const at::Tensor& input, const at::Tensor& weight,
                                        at::IntArrayRef stride, at::IntArrayRef padding,
                                        int64_t groups, c10::string_view part) {
  const Conv2dShape s =
      check_conv2d_activation(input, weight, c10::nullopt, stride, padding, groups, Backend::Cuda);
  return path_name(choose_path(s, input, parse_conv_part(part)));
}

}  // namespace

TORCH_LIBRARY_IMPL(LENETALEX_NS, LENETALEX_CUDA_KEY, m) {
  m.impl("conv2d_activation", &conv2d_activation_cuda);
  m.impl("conv2d_activation_backward", &conv2d_activation_backward_cuda);
  m.impl("_conv2d_activation_path", &conv2d_activation_path_cuda);
}

}  // namespace conv_cuda
}  // namespace lenetalex
