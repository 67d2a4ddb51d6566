// avg_subsample on CUDA: forward and backward.
//
// Forward: one kernel, one thread per output element. Blocks take runs of
// whole (n, c) planes (several small planes per block, so LeNet's 5x5 and
// 14x14 outputs still fill the threads); indices inside a run are 32-bit, plane
// offsets 64-bit. 2x2 windows at stride 2 (LeNet) get an unrolled instance.
//
// Backward: one pass over the data. Block (b, c) owns channel c of images
// [n0, n1). With grad input asked for, each thread takes one input element and
// gathers gsum, the grad of the pre-activation (from the saved output) summed
// over every window that covers it; it writes its grad input, zeros included,
// so no memset is needed. The per-channel grads come from the same numbers:
//   grad bias   = sum over windows of gpre         = (1/area) sum over elements of gsum
//   grad weight = sum over windows of gpre * mean  = (1/area) sum over elements of gsum * x
// so the input is read once, coalesced, and no window mean is kept. Without
// grad input, threads walk output elements instead and recompute each window's
// sum from the input. Each block's two sums are reduced in shared memory in a
// fixed order and stored per (channel, block); a small second kernel adds each
// channel's block sums in a fixed order. No atomics: bitwise reproducible.
// Both kernels accumulate in float32 (float64 for double tensors).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>

#include "cuda/launch.cuh"
#include "common/activation.h"
#include "common/grads.h"
#include "ops/avg_subsample.h"

namespace lenetalex {
namespace {

constexpr int kThreads = 256;           // threads per block, a multiple of 32
constexpr int64_t kRunElements = 1024;  // forward: output elements per block run (4 a thread)
constexpr int64_t kBackwardBlocks = 2048;  // backward: target blocks over all channels
constexpr int64_t kMaxGridX = 65535;       // forward grid cap (the kernel grid-strides)
constexpr int64_t kMaxGridY = 65535;       // CUDA's limit on gridDim.y

// Geometry in 32-bit: a plane has < 2^31 elements (checked on the host).
struct Geometry {
  int h, w, oh, ow, kh, kw, sh, sw;
};

// Sum of the window whose top-left corner is (row, col) of one input plane.
// K2: the 2x2 window, unrolled.
template <bool K2, typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t window_sum(const scalar_t* __restrict__ plane, const Geometry& g,
                                            int row, int col) {
  const scalar_t* p = plane + static_cast<int64_t>(row) * g.w + col;
  if (K2) {
    return (acc_t(p[0]) + acc_t(p[1])) + (acc_t(p[g.w]) + acc_t(p[g.w + 1]));
  }
  acc_t sum = 0;
  for (int a = 0; a < g.kh; ++a, p += g.w)
    for (int b = 0; b < g.kw; ++b) sum += acc_t(p[b]);
  return sum;
}

// c mod channels for 0 <= c < channels + 2^31; 32-bit when it can be.
__device__ __forceinline__ int64_t wrap_channel(int64_t c, int64_t channels) {
  if (c < channels) return c;
  if (channels <= INT_MAX) return static_cast<uint32_t>(c) % static_cast<uint32_t>(channels);
  return c % channels;
}

// Each block handles runs of `run` consecutive planes (n * C + c); grid-strides
// over runs.
template <bool K2, typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ weight,
                               const scalar_t* __restrict__ bias, scalar_t* __restrict__ y,
                               int64_t planes, int64_t channels, Geometry g, int run,
                               Activation act) {
  if (K2) g.kh = g.kw = g.sh = g.sw = 2;  // constants the compiler can fold
  const int plane_out = g.oh * g.ow;
  const int64_t plane_in = static_cast<int64_t>(g.h) * g.w;
  const acc_t inv_area = acc_t(1) / acc_t(g.kh * g.kw);
  for (int64_t p0 = static_cast<int64_t>(blockIdx.x) * run; p0 < planes;
       p0 += static_cast<int64_t>(gridDim.x) * run) {
    const int count = static_cast<int>(min(static_cast<int64_t>(run), planes - p0));
    const int total = count * plane_out;  // <= max(kRunElements, plane_out) < 2^31
    const int64_t c0 = p0 % channels;
    for (int i = threadIdx.x; i < total; i += blockDim.x) {
      const int local = i / plane_out, o = i - local * plane_out;
      const int oh = o / g.ow, ow = o - oh * g.ow;
      const int64_t p = p0 + local;
      const int64_t c = wrap_channel(c0 + local, channels);
      const acc_t sum = window_sum<K2, acc_t>(x + p * plane_in, g, oh * g.sh, ow * g.sw);
      const acc_t shift = bias ? acc_t(bias[c]) : acc_t(0);  // bias is optional
      const acc_t pre = acc_t(weight[c]) * inv_area * sum + shift;
      y[p * plane_out + o] = static_cast<scalar_t>(activation_forward<acc_t>(act, pre));
    }
  }
}

// (a, b) summed over the block, in a fixed order; the result is valid in
// thread 0. Every thread of the block must call it.
template <typename acc_t>
__device__ __forceinline__ void block_sum2(acc_t& a, acc_t& b) {
  LENETALEX_SHARED(acc_t, sa, [32]);
  LENETALEX_SHARED(acc_t, sb, [32]);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int off = 16; off > 0; off >>= 1) {
    a += __shfl_down_sync(0xffffffffu, a, off);
    b += __shfl_down_sync(0xffffffffu, b, off);
  }
  if (lane == 0) {
    sa[warp] = a;
    sb[warp] = b;
  }
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x >> 5;
    a = lane < warps ? sa[lane] : acc_t(0);
    b = lane < warps ? sb[lane] : acc_t(0);
    for (int off = 16; off > 0; off >>= 1) {
      a += __shfl_down_sync(0xffffffffu, a, off);
      b += __shfl_down_sync(0xffffffffu, b, off);
    }
  }
  __syncthreads();  // sa, sb may be reused by the next call
}

// Grid (blocks_per_channel, min(C, 65535)); see the file comment. x: null when
// grad weight is not wanted; gx: null when grad input is not wanted; part_w,
// part_b: (C, blocks_per_channel) block sums, null when neither grad weight nor
// grad bias is wanted.
template <bool K2, typename scalar_t, typename acc_t>
__global__ void backward_kernel(const scalar_t* __restrict__ gy, const scalar_t* __restrict__ y,
                                const scalar_t* __restrict__ x,
                                const scalar_t* __restrict__ weight, scalar_t* __restrict__ gx,
                                acc_t* __restrict__ part_w, acc_t* __restrict__ part_b, int64_t n,
                                int64_t channels, Geometry g, Activation act) {
  if (K2) g.kh = g.kw = g.sh = g.sw = 2;  // constants the compiler can fold
  const int plane_in = g.h * g.w, plane_out = g.oh * g.ow;
  const acc_t inv_area = acc_t(1) / acc_t(g.kh * g.kw);
  const int64_t blocks = gridDim.x, b = blockIdx.x;
  const int64_t n0 = n * b / blocks, n1 = n * (b + 1) / blocks;
  const int count = static_cast<int>(n1 - n0);  // images of this block
  for (int64_t c = blockIdx.y; c < channels; c += gridDim.y) {
    acc_t sum_b = 0, sum_w = 0;
    if (gx) {
      // One input element per thread: gsum over the windows that cover it.
      const acc_t scale = acc_t(weight[c]) * inv_area;
      const int total = count * plane_in;  // < 2^31 (host)
      for (int i = threadIdx.x; i < total; i += blockDim.x) {
        const int local = i / plane_in, r = i - local * plane_in;
        const int h = r / g.w, w = r - h * g.w;
        const int64_t p = (n0 + local) * channels + c;
        // Windows covering row h: oh * sh <= h < oh * sh + kh, 0 <= oh < OH.
        const int oh_lo = h >= g.kh ? (h - g.kh) / g.sh + 1 : 0;
        const int oh_hi = min(h / g.sh, g.oh - 1);
        const int ow_lo = w >= g.kw ? (w - g.kw) / g.sw + 1 : 0;
        const int ow_hi = min(w / g.sw, g.ow - 1);
        const scalar_t* gyp = gy + p * plane_out;
        const scalar_t* yp = y + p * plane_out;
        acc_t gsum = 0;
        for (int oh = oh_lo; oh <= oh_hi; ++oh) {
          for (int ow = ow_lo; ow <= ow_hi; ++ow) {
            const int o = oh * g.ow + ow;
            gsum += acc_t(gyp[o]) * activation_grad_from_output<acc_t>(act, acc_t(yp[o]));
          }
        }
        gx[p * plane_in + r] = static_cast<scalar_t>(gsum * scale);
        sum_b += gsum;
        if (x) sum_w += gsum * acc_t(x[p * plane_in + r]);
      }
      sum_b *= inv_area;  // every window's gpre was counted once per element (area times)
    } else {
      // One output element per thread.
      const int total = count * plane_out;
      for (int i = threadIdx.x; i < total; i += blockDim.x) {
        const int local = i / plane_out, o = i - local * plane_out;
        const int oh = o / g.ow, ow = o - oh * g.ow;
        const int64_t p = (n0 + local) * channels + c;
        const acc_t gpre = acc_t(gy[p * plane_out + o]) *
                           activation_grad_from_output<acc_t>(act, acc_t(y[p * plane_out + o]));
        sum_b += gpre;
        if (x) sum_w += gpre * window_sum<K2, acc_t>(x + p * plane_in, g, oh * g.sh, ow * g.sw);
      }
    }
    if (part_b) {  // uniform over the block
      block_sum2(sum_b, sum_w);
      if (threadIdx.x == 0) {
        part_b[c * blocks + b] = sum_b;
        part_w[c * blocks + b] = sum_w * inv_area;
      }
    }
  }
}

// grad_weight[c], grad_bias[c] = the sums of channel c's block sums, in order.
template <typename scalar_t, typename acc_t>
__global__ void finish_kernel(const acc_t* __restrict__ part_w, const acc_t* __restrict__ part_b,
                              scalar_t* __restrict__ gw, scalar_t* __restrict__ gb,
                              int64_t channels, int blocks) {
  for (int64_t c = blockIdx.x; c < channels; c += gridDim.x) {
    acc_t sw = 0, sb = 0;
    for (int j = threadIdx.x; j < blocks; j += blockDim.x) {
      sw += part_w[c * blocks + j];
      sb += part_b[c * blocks + j];
    }
    block_sum2(sw, sb);
    if (threadIdx.x == 0) {
      if (gw) gw[c] = static_cast<scalar_t>(sw);
      if (gb) gb[c] = static_cast<scalar_t>(sb);
    }
  }
}

Geometry geometry(const AvgSubsampleShape& s) {
  // Block loops step an int index by the block size over a plane: headroom for
  // the last step.
  TORCH_CHECK_VALUE(s.h * s.w <= INT_MAX - kThreads, "avg_subsample: on CUDA an input plane "
                    "(H * W) must have fewer than 2^31 - ", kThreads, " elements, got ", s.h,
                    " x ", s.w);
  // A stride past the input leaves one window (oh or ow is 1), where the stride
  // no longer matters: clamped so it fits an int and the backward's divisions.
  const int64_t sh = std::min(s.sh, s.h), sw = std::min(s.sw, s.w);
  return Geometry{static_cast<int>(s.h),  static_cast<int>(s.w),  static_cast<int>(s.oh),
                  static_cast<int>(s.ow), static_cast<int>(s.kh), static_cast<int>(s.kw),
                  static_cast<int>(sh),   static_cast<int>(sw)};
}

bool is_2x2_stride_2(const AvgSubsampleShape& s) {
  return s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2;
}

int threads_for(int64_t elements) {
  return static_cast<int>(std::min<int64_t>(kThreads, (elements + 31) / 32 * 32));
}

at::Tensor avg_subsample_cuda(const at::Tensor& input, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias, at::IntArrayRef kernel_size,
                              at::IntArrayRef stride, c10::string_view activation) {
  const AvgSubsampleShape s =
      check_avg_subsample(input, weight, bias, kernel_size, stride, Backend::Cuda);
  const Activation act = parse_activation(activation);
  const Geometry g = geometry(s);
  c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  at::Tensor y = at::empty({s.n, s.c, s.oh, s.ow}, input.options());
  if (y.numel() == 0) return y;
  const int64_t planes = s.n * s.c, plane_out = s.oh * s.ow;
  const int64_t run = std::max<int64_t>(1, kRunElements / plane_out);
  const int64_t runs = (planes + run - 1) / run;
  const dim3 grid(static_cast<unsigned>(std::min(runs, kMaxGridX)));
  const dim3 block(threads_for(run * plane_out));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "avg_subsample_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto kernel = is_2x2_stride_2(s) ? forward_kernel<true, scalar_t, acc_t>
                                     : forward_kernel<false, scalar_t, acc_t>;
    launch(kernel, grid, block, 0, stream, x.const_data_ptr<scalar_t>(),
           w.const_data_ptr<scalar_t>(), has_bias ? b.const_data_ptr<scalar_t>() : nullptr,
                                       y.mutable_data_ptr<scalar_t>(), planes, s.c, g,
                                       static_cast<int>(run), act);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> avg_subsample_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& output, const at::Tensor& input,
    const at::Tensor& weight, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  const AvgSubsampleShape s =
      check_avg_subsample_backward(grad_output, output, input, weight, kernel_size, stride,
                                   Backend::Cuda);
  const Activation act = parse_activation(activation);
  const Geometry g = geometry(s);
  c10::cuda::CUDAGuard guard(input.device());
  const auto opts = input.options();
  at::Tensor gx = grad_or_empty(output_mask[0], {s.n, s.c, s.h, s.w}, opts);
  at::Tensor gw = grad_or_empty(output_mask[1], {s.c}, opts);
  at::Tensor gb = grad_or_empty(output_mask[2], {s.c}, opts);
  if (s.n == 0 || s.c == 0) {  // nothing flows back; reductions over an empty batch are zero
    if (output_mask[1]) gw.zero_();
    if (output_mask[2]) gb.zero_();
    return {gx, gw, gb};
  }
  const bool reduce = output_mask[1] || output_mask[2];
  if (!output_mask[0] && !reduce) return {gx, gw, gb};

  // Blocks per channel: about kBackwardBlocks in all, at most one per image,
  // and few enough images per block that its element count fits in 32 bits.
  // Depends on the shape alone, so results are reproducible across devices.
  const int64_t plane = output_mask[0] ? s.h * s.w : s.oh * s.ow;
  const int64_t min_blocks = (s.n + INT_MAX / plane - 1) / (INT_MAX / plane);
  const int64_t blocks = std::min(
      s.n, std::max({(kBackwardBlocks + s.c - 1) / s.c, min_blocks, int64_t(1)}));
  TORCH_CHECK(blocks <= INT_MAX, "avg_subsample_backward: batch too large for one launch");
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(std::min(s.c, kMaxGridY)));
  const dim3 block(threads_for((s.n + blocks - 1) / blocks * plane));

  const at::Tensor gy = grad_output.contiguous(), y = output.contiguous(), w = weight.contiguous();
  // The input is read only for grad weight.
  const at::Tensor x = output_mask[1] ? input.contiguous() : at::Tensor();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "avg_subsample_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_opts = opts.dtype(c10::CppTypeToScalarType<acc_t>::value);
    at::Tensor part = reduce ? at::empty({2, s.c, blocks}, acc_opts) : at::Tensor();
    acc_t* part_w = reduce ? part.mutable_data_ptr<acc_t>() : nullptr;
    acc_t* part_b = reduce ? part_w + s.c * blocks : nullptr;
    auto kernel = is_2x2_stride_2(s) ? backward_kernel<true, scalar_t, acc_t>
                                     : backward_kernel<false, scalar_t, acc_t>;
    launch(kernel, grid, block, 0, stream,
        gy.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
        output_mask[1] ? x.const_data_ptr<scalar_t>() : nullptr, w.const_data_ptr<scalar_t>(),
        output_mask[0] ? gx.mutable_data_ptr<scalar_t>() : nullptr, part_w, part_b, s.n, s.c, g,
        act);
    if (reduce) {
      const dim3 fgrid(static_cast<unsigned>(std::min(s.c, kMaxGridX)));
      launch(finish_kernel<scalar_t, acc_t>, fgrid, threads_for(blocks), 0, stream,
          part_w, part_b, output_mask[1] ? gw.mutable_data_ptr<scalar_t>() : nullptr,
          output_mask[2] ? gb.mutable_data_ptr<scalar_t>() : nullptr, s.c,
          static_cast<int>(blocks));
    }
  });
  return {gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(LENETALEX_NS, LENETALEX_CUDA_KEY, m) {
  m.impl("avg_subsample", &avg_subsample_cuda);
  m.impl("avg_subsample_backward", &avg_subsample_backward_cuda);
}

}  // namespace lenetalex
