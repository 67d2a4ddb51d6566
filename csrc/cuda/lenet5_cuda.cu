// lenet5 on CUDA: the whole LeNet-5, forward and backward, one kernel each
// (plus a small fixed-order reduction of the weight grads). Never yet run on a
// GPU: written for sm_80 / sm_90, tested in the CUDA emulator.
//
// Forward (forward_kernel): persistent-style, a block of 256 threads takes a
// group of kImages images at a time (4 in float accumulation, 2 in double) and
// grid-strides over the groups. The group's activations live in shared memory
// in the accumulation type: input 1@32x32, S2 6@14x14, S4 16@5x5, C5 120, F6 84
// per image (2,804 values, 44.9 KB for the group). C1 and C3 never sit there:
// a thread computes the four conv outputs of one 2x2 subsampling window (a 6x6
// input patch in registers), squashes them and writes the pooled, squashed S2 or
// S4 value, so a conv layer and its subsampling are one pass. C3 reads only the
// C3 table's connections. C5 and F6 are matrix-vector products, a warp per
// output unit: the lanes read a weight row coalesced and use each weight for
// every image of the group, then a butterfly of shuffles sums the lanes (a
// fixed order). The RBF distances the same way, a warp per prototype. With
// save, every layer's output is also stored to the activations tensor: image i
// at i * kSaved, each layer at the CPU's kOff* offsets (the CPU keeps blocks of
// 8 images interleaved; the buffer is opaque, only its size, saved_numel(N), is
// shared). With save the grid also covers the padding images up to a multiple
// of 8 (zero input), so the whole buffer is written, every bit defined.
//
// Backward (backward_kernel): the same persistent layout, kImages / 2 images
// per group (2 in float, 1 in double: the grads take more room). Per group, top
// down: RBF -> F6 -> C5 -> S4 -> C3 -> S2 -> C1 (-> input when asked), each
// layer's output grad turned into its pre-activation grad d = g * f'(y) (y the
// saved output). Shared memory (5,160 values per image, reused across phases):
//   P: S2 and d(C3) for the C3 phase; then the input and one channel of d(C1)
//   Q: d(S2)
//   S: S4, C5, F6 (every image's, rows kTop apart), then their d's (the
//      same); then the input grad
// The layer outputs come from the activations tensor. Weight grads are
// deterministic, with no atomics: every weight-grad entry is owned by one thread
// of the block for a whole pass, which sums it over the group's images in a
// fixed order and adds it to the block's own row of partial sums in global
// memory (a plain read-modify-write: no other block touches the row). The
// number of blocks is min(groups, kBackwardBlocks), a function of N alone, so
// the sums do not depend on the device. Grads whose sums are long (the
// subsampling weights, C1's 25 taps per channel) split each sum into slices
// added in slice order through shared memory (entry_sums). reduce_kernel then
// adds the blocks' rows in block order.
//
// Everything accumulates in at::opmath_type (float for float16 / bfloat16 /
// float32, double for float64) and rounds to the tensor dtype when it stores.
//
// Roofline, H100 SXM (an estimate, not a measurement: no GPU has run this).
// Inference with the paper's C3 table is 326,520 multiply-adds per image (C1
// 117,600, C3 150,000, C5 48,000, F6 10,080, RBF 840), float32 FMAs on the CUDA
// cores. Bounds per image and per second:
//   - FMA: 132 SMs x 128 lanes x 1.98 GHz = 33.5 T FMA/s -> 103 M img/s.
//   - HBM: 4 KB of float32 input per image at 3.35 TB/s -> 820 M img/s.
//   - L2: the C5/F6 weights (232 KB) are read once per group of 4 images,
//     58 KB per image; at ~5.5 TB/s -> ~95 M img/s.
//   - Shared memory: a 6x6 patch (36 loads) per 100 FMAs in C1/C3, ~120 K loads
//     per image; 32 lanes/clock/SM -> ~140 M img/s.
//   - Issue: every instruction, not only FMAs. Per image ~330 K FMAs, ~120 K
//     shared loads, ~9,100 tanhf (~20 instructions each, ~180 K), ~100 K
//     address/loop instructions: ~730 K thread-instructions; 132 SMs x 4
//     schedulers x 32 lanes x 1.98 GHz = 33.5 T/s -> ~46 M img/s.
// Issue binds. Occupancy is good (44.9 KB of shared memory and 48 registers
// per 256-thread block: 5 blocks, 40 warps per SM), but the block idles at its
// 6 barriers per group and in phases with few work items (C3/S4: 1,600 over
// 256 threads, 7 rounds for 6.25; the RBF: 10 prototypes over 8 warps). At 50-65% of
// the issue bound: ~23-30 M img/s at large batch, above the issue's 20 M img/s
// target but not by a wide margin. `lenetalex bench --device cuda` has a
// LeNet5-b65536 row to measure it when a GPU is lent.
// A training step adds ~2x the FMAs and the weight-grad partials: each group
// of 2 images reads and writes its block's row (62 K values, C5's 48 K of
// them), ~190 KB per image of L2 traffic (256 rows, 63 MB, spill past L2 to
// HBM): ~15 M img/s from that alone, far past what training to 89% in under a
// second needs (~10 epochs of 60,000 images: 0.6 M img/s).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "cuda/launch.cuh"
#include "common/activation.h"
#include "ops/lenet5.h"

namespace lenetalex {
namespace lenet5 {
namespace {

constexpr int kThreads = 256;  // threads per block, 8 warps
constexpr int kWarps = kThreads / 32;
constexpr int kPixels = kIn * kIn;                          // 1024
constexpr int kC1Plane = kH1 * kH1, kS2Plane = kH2 * kH2;   // 784, 196
constexpr int kC3Plane = kH3 * kH3, kS4Plane = kH4 * kH4;   // 100, 25
constexpr int kS2Size = kS2 * kS2Plane;                     // 1176
constexpr int kS4Size = kS4 * kS4Plane;                     // 400
constexpr int kTop = kS4Size + kC5 + kF6;                   // 604: S4, C5, F6 as saved
constexpr int64_t kForwardBlocks = 2048;   // forward grid cap; blocks grid-stride
constexpr int64_t kBackwardBlocks = 256;   // backward grid cap (rows of partial sums)
constexpr Activation kAct = Activation::ScaledTanh;

// Images per forward group; the backward takes half as many.
template <typename acc_t>
constexpr int kImages = 16 / sizeof(acc_t);
template <typename acc_t>
constexpr int kBackImages = kImages<acc_t> / 2;

// Per image, in shared memory.
constexpr int kForwardPerImage = kPixels + kS2Size + kTop;  // 2804
constexpr int kRegionP = kS2Size + kC3 * kC3Plane;          // 2776: S2 + d(C3)
constexpr int kRegionQ = kS2Size;                           // 1176: d(S2)
constexpr int kRegionS = 2 * kTop;                          // 1208: S4..F6, their d's
constexpr int kBackwardPerImage = kRegionP + kRegionQ + kRegionS;  // 5160
static_assert(kPixels + kC1Plane <= kRegionP, "the input and one d(C1) channel fit in P");
static_assert(kPixels <= kRegionS, "the input grad fits in S");

// The weight grads' offsets in one flat array, in the backward op's order
// after the input (c1_weight .. prototypes; entry 0 unused). Compile-time
// constants (the prototypes come last, so K changes only the total): kept out
// of the backward kernel's registers.
enum Grad : int { kGC1W = 1, kGC1B, kGS2W, kGS2B, kGC3W, kGC3B, kGS4W, kGS4B, kGC5W, kGC5B,
                  kGF6W, kGF6B, kGProto };
constexpr int64_t kGradSizes[13] = {0,   kC1 * 25, kC1, kS2, kS2,      kC3 * kS2 * 25, kC3,
                                    kS4, kS4,      kC5 * kS4 * 25, kC5, kF6 * kC5, kF6};
constexpr int64_t grad_off(int i) { return i == 0 ? 0 : grad_off(i - 1) + kGradSizes[i - 1]; }
inline int64_t grad_total(int64_t k) { return grad_off(kGProto) + k * kF6; }

// C3's connections: bit 8 o + i of the 128 is set when C3 map o reads S2 map
// i. Two words in registers, not an array (one indexed at run time would live
// in local memory).
struct C3Table {
  uint64_t lo, hi;  // maps 0-7, 8-15
  __device__ bool reads(int o, int i) const {
    return ((o < 8 ? lo : hi) >> (8 * (o & 7) + i)) & 1;
  }
};

// Every thread reads the (16, 6) bool table from device memory when its kernel
// starts: 96 cached loads, where reading it on the host would copy it back and
// wait for the stream on every call.
__device__ __forceinline__ C3Table load_table(const bool* __restrict__ q) {
  C3Table t{0, 0};
#pragma unroll
  for (int o = 0; o < kC3; ++o)
#pragma unroll
    for (int i = 0; i < kS2; ++i)
      if (q[o * kS2 + i]) (o < 8 ? t.lo : t.hi) |= uint64_t(1) << (8 * (o & 7) + i);
  return t;
}

template <typename scalar_t>
struct Params {  // the parameters' data, contiguous
  const scalar_t *c1w, *c1b, *s2w, *s2b, *c3w, *c3b, *s4w, *s4b, *c5w, *c5b, *f6w, *f6b, *proto;
  int k;  // prototypes
};

template <typename acc_t>
__device__ __forceinline__ acc_t squash(acc_t x) {
  return activation_forward<acc_t>(kAct, x);
}

template <typename acc_t>
__device__ __forceinline__ acc_t slope(acc_t y) {
  return activation_grad_from_output<acc_t>(kAct, y);
}

// The sum over the warp's lanes, in every lane; a fixed butterfly order.
template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// ---------------------------------------------------------------- forward

// One group's images as the accumulation type, zeros past the batch.
template <typename scalar_t, typename acc_t, int IMG>
__device__ void load_images(const scalar_t* __restrict__ x, int64_t n0, int valid, acc_t* in) {
  for (int i = threadIdx.x; i < IMG * kPixels; i += kThreads) {
    const int img = i / kPixels;
    in[i] = img < valid ? acc_t(x[(n0 + img) * kPixels + (i - img * kPixels)]) : acc_t(0);
  }
}

// The four outputs of a 5x5 correlation at (0,0), (0,1), (1,0), (1,1) of the
// 6x6 patch p (rows `stride` apart), added to acc.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void conv_quad(const acc_t* p, int stride,
                                          const scalar_t* __restrict__ w, acc_t acc[4]) {
  acc_t patch[6][6];
#pragma unroll
  for (int r = 0; r < 6; ++r)
#pragma unroll
    for (int c = 0; c < 6; ++c) patch[r][c] = p[r * stride + c];
#pragma unroll
  for (int ky = 0; ky < 5; ++ky) {
#pragma unroll
    for (int kx = 0; kx < 5; ++kx) {
      const acc_t wv = acc_t(w[ky * 5 + kx]);
      acc[0] += wv * patch[ky][kx];
      acc[1] += wv * patch[ky][kx + 1];
      acc[2] += wv * patch[ky + 1][kx];
      acc[3] += wv * patch[ky + 1][kx + 1];
    }
  }
}

// Squashes the four conv outputs of a window (stored to `conv` in the saved
// buffer, rows `width` apart, when it is not null) and returns the squashed
// subsampling of their mean.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t pool_quad(acc_t acc[4], scalar_t* conv, int width, acc_t w,
                                           acc_t b) {
#pragma unroll
  for (int q = 0; q < 4; ++q) acc[q] = squash(acc[q]);
  if (conv) {
    conv[0] = scalar_t(acc[0]);
    conv[1] = scalar_t(acc[1]);
    conv[width] = scalar_t(acc[2]);
    conv[width + 1] = scalar_t(acc[3]);
  }
  return squash(w * acc_t(0.25) * ((acc[0] + acc[1]) + (acc[2] + acc[3])) + b);
}

// C1 then S2: a thread per S2 value. saved: the group's first image's
// activations, or null.
template <typename scalar_t, typename acc_t, int IMG>
__device__ void c1_s2(const Params<scalar_t>& p, const acc_t* in, acc_t* s2, scalar_t* saved) {
  for (int i = threadIdx.x; i < IMG * kS2Size; i += kThreads) {
    const int img = i / kS2Size, r = i - img * kS2Size;
    const int c = r / kS2Plane, py = (r % kS2Plane) / kH2, px = r % kH2;
    const acc_t b = acc_t(p.c1b[c]);
    acc_t acc[4] = {b, b, b, b};
    conv_quad<scalar_t, acc_t>(in + img * kPixels + 2 * py * kIn + 2 * px, kIn, p.c1w + c * 25,
                               acc);
    scalar_t* conv = saved ? saved + img * kSaved + kOffC1 + c * kC1Plane +
                                 2 * py * kH1 + 2 * px : nullptr;
    const acc_t v = pool_quad(acc, conv, kH1, acc_t(p.s2w[c]), acc_t(p.s2b[c]));
    s2[i] = v;
    if (saved) saved[img * kSaved + kOffS2 + r] = scalar_t(v);
  }
}

// C3 (the table's connections only) then S4: a thread per S4 value.
template <typename scalar_t, typename acc_t, int IMG>
__device__ void c3_s4(const Params<scalar_t>& p, const C3Table& t, const acc_t* s2, acc_t* top,
                      scalar_t* saved) {
  for (int i = threadIdx.x; i < IMG * kS4Size; i += kThreads) {
    const int img = i / kS4Size, r = i - img * kS4Size;
    const int o = r / kS4Plane, py = (r % kS4Plane) / kH4, px = r % kH4;
    const acc_t b = acc_t(p.c3b[o]);
    acc_t acc[4] = {b, b, b, b};
    for (int c = 0; c < kS2; ++c) {
      if (!t.reads(o, c)) continue;
      conv_quad<scalar_t, acc_t>(s2 + img * kS2Size + c * kS2Plane + 2 * py * kH2 + 2 * px, kH2,
                                 p.c3w + (o * kS2 + c) * 25, acc);
    }
    scalar_t* conv = saved ? saved + img * kSaved + kOffC3 + o * kC3Plane +
                                 2 * py * kH3 + 2 * px : nullptr;
    const acc_t v = pool_quad(acc, conv, kH3, acc_t(p.s4w[o]), acc_t(p.s4b[o]));
    top[img * kTop + r] = v;
    if (saved) saved[img * kSaved + kOffS4 + r] = scalar_t(v);
  }
}

// out[img][o] = f(b[o] + sum_i W[o][i] in[img][i]) for O outputs, I inputs;
// a warp per output, each weight used for every image. in/out: rows kTop apart.
template <typename scalar_t, typename acc_t, int IMG, int O, int I>
__device__ void dense(const scalar_t* __restrict__ W, const scalar_t* __restrict__ b,
                      const acc_t* in, acc_t* out, scalar_t* saved, int saved_off) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int o = warp; o < O; o += kWarps) {
    acc_t acc[IMG];
#pragma unroll
    for (int img = 0; img < IMG; ++img) acc[img] = acc_t(0);
    for (int i = lane; i < I; i += 32) {
      const acc_t w = acc_t(W[o * I + i]);
#pragma unroll
      for (int img = 0; img < IMG; ++img) acc[img] += w * in[img * kTop + i];
    }
#pragma unroll
    for (int img = 0; img < IMG; ++img) {
      const acc_t v = squash(warp_sum(acc[img]) + acc_t(b[o]));
      if (lane == img) {  // one lane stores each image's value
        out[img * kTop + o] = v;
        if (saved) saved[img * kSaved + saved_off + o] = scalar_t(v);
      }
    }
  }
}

// dist[img][k] = sum_j (f6[img][j] - proto[k][j])^2, a warp per prototype.
template <typename scalar_t, typename acc_t, int IMG>
__device__ void rbf(const Params<scalar_t>& p, const acc_t* f6, scalar_t* __restrict__ dist,
                    int valid) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int k = warp; k < p.k; k += kWarps) {
    acc_t acc[IMG];
#pragma unroll
    for (int img = 0; img < IMG; ++img) acc[img] = acc_t(0);
    for (int j = lane; j < kF6; j += 32) {
      const acc_t w = acc_t(p.proto[k * kF6 + j]);
#pragma unroll
      for (int img = 0; img < IMG; ++img) {
        const acc_t d = f6[img * kTop + j] - w;
        acc[img] += d * d;
      }
    }
#pragma unroll
    for (int img = 0; img < IMG; ++img) {
      const acc_t v = warp_sum(acc[img]);
      if (lane == img && img < valid) dist[static_cast<int64_t>(img) * p.k + k] = scalar_t(v);
    }
  }
}

// groups: of IMG images (the last may be partly padding); n: real images.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ x, Params<scalar_t> p,
                   const bool* __restrict__ table, scalar_t* __restrict__ dist,
                   scalar_t* __restrict__ saved, int64_t n, int64_t groups) {
  constexpr int IMG = kImages<acc_t>;
  const C3Table t = load_table(table);
  LENETALEX_SHARED(acc_t, smem, [IMG * kForwardPerImage]);
  acc_t* in = smem;
  acc_t* s2 = in + IMG * kPixels;
  acc_t* top = s2 + IMG * kS2Size;  // per image: S4 400, C5 120, F6 84
  for (int64_t g = blockIdx.x; g < groups; g += gridDim.x) {
    const int64_t n0 = g * IMG;
    const int valid = static_cast<int>(min(static_cast<int64_t>(IMG), max(n - n0, int64_t(0))));
    scalar_t* sv = saved ? saved + n0 * kSaved : nullptr;
    load_images<scalar_t, acc_t, IMG>(x, n0, valid, in);
    __syncthreads();
    c1_s2<scalar_t, acc_t, IMG>(p, in, s2, sv);
    __syncthreads();
    c3_s4<scalar_t, acc_t, IMG>(p, t, s2, top, sv);
    __syncthreads();
    dense<scalar_t, acc_t, IMG, kC5, kS4Size>(p.c5w, p.c5b, top, top + kS4Size, sv, kOffC5);
    __syncthreads();
    dense<scalar_t, acc_t, IMG, kF6, kC5>(p.f6w, p.f6b, top + kS4Size, top + kS4Size + kC5, sv,
                                          kOffF6);
    __syncthreads();
    rbf<scalar_t, acc_t, IMG>(p, top + kS4Size + kC5, dist + n0 * p.k, valid);
    __syncthreads();  // the next group overwrites the buffers
  }
}

// ---------------------------------------------------------------- backward

// What the backward computes: the grads at and above layer `lowest` (0 input,
// 1 C1, 2 S2, 3 C3 and S4, 5 C5, 6 F6 and the RBF).
struct Plan {
  bool input, params, proto;
  int lowest;
};

// The backward's phases are separate calls: inlined into the kernel's one
// body they needed more than 128 registers a thread and spilled (nvcc 13,
// sm_90); as calls each fits, at the cost of a call frame (160 bytes of local
// memory for the by-reference arguments), read once per phase.
#if defined(LENETALEX_CUDA_EMU)
#define LENET5_PHASE
#else
#define LENET5_PHASE __noinline__
#endif

template <typename scalar_t, typename acc_t>
struct Backward {
  const scalar_t* saved;  // the group's first image's activations
  int valid;              // real images in the group
  acc_t* part;            // this block's row of partial sums (null without params / proto)
  // A saved value of image img, zero past the batch (padding contributes nothing).
  __device__ acc_t act(int img, int off) const {
    return img < valid ? acc_t(saved[static_cast<int64_t>(img) * kSaved + off]) : acc_t(0);
  }
};

// For entries e < E (E <= kThreads), the sum over j < L of f(e, j), in the
// thread whose index is e (others get 0). Each entry's sum is split into
// kThreads / E slices summed in slice order (through red): a fixed order.
template <typename acc_t, typename F>
__device__ acc_t entry_sums(int E, int L, acc_t* red, F f) {
  const int slices = kThreads / E;
  const int e = threadIdx.x / slices, s = threadIdx.x % slices;
  acc_t sum = 0;
  if (e < E)
    for (int j = s; j < L; j += slices) sum += f(e, j);
  red[threadIdx.x] = sum;
  __syncthreads();
  acc_t total = 0;
  if (static_cast<int>(threadIdx.x) < E)
    for (int q = 0; q < slices; ++q) total += red[threadIdx.x * slices + q];
  __syncthreads();  // red is reused by the next call
  return total;
}

// The RBF's grad into F6: d(F6) = f'(F6) sum_k 2 g[k] (F6 - p[k]); the
// prototypes' grad -sum over images of 2 g[k] (F6 - p[k]).
template <typename scalar_t, typename acc_t, int IMG>
__device__ LENET5_PHASE void rbf_backward(
    const Params<scalar_t>& p, const Backward<scalar_t, acc_t>& b, const scalar_t* __restrict__ gd,
    const acc_t* top, acc_t* dtop, const Plan& plan, int64_t proto_off) {
  const int K = p.k;
  const acc_t* f6 = top + kS4Size + kC5;
  for (int i = threadIdx.x; i < IMG * kF6; i += kThreads) {
    const int img = i / kF6, j = i - img * kF6;
    acc_t g = 0;
    if (img < b.valid)
      for (int k = 0; k < K; ++k)
        g += acc_t(2) * acc_t(gd[img * K + k]) * (f6[img * kTop + j] - acc_t(p.proto[k * kF6 + j]));
    dtop[img * kTop + kS4Size + kC5 + j] = g * slope(f6[img * kTop + j]);
  }
  if (!plan.proto) return;
  for (int e = threadIdx.x; e < K * kF6; e += kThreads) {
    const int k = e / kF6, j = e - k * kF6;
    const acc_t w = acc_t(p.proto[e]);
    acc_t s = 0;
    for (int img = 0; img < b.valid; ++img)
      s += acc_t(2) * acc_t(gd[img * K + k]) * (f6[img * kTop + j] - w);
    b.part[proto_off + e] -= s;
  }
}

// A dense layer's backward, O outputs, I inputs; d: its pre-activation grads
// (rows kTop apart), in: its input. Weight and bias grads into the partials
// (when params); with `down`, the input's pre-activation grad into dx
// (f'(in) sum_o W[o][i] d[o]).
template <typename scalar_t, typename acc_t, int IMG, int O, int I>
__device__ LENET5_PHASE void dense_backward(
    const scalar_t* __restrict__ W, const acc_t* d, const acc_t* in, acc_t* dx, acc_t* part,
    int64_t w_off, int64_t b_off, bool params, bool down) {
  if (params) {
    for (int e = threadIdx.x; e < O * I; e += kThreads) {
      const int o = e / I, i = e - o * I;
      acc_t s = 0;
#pragma unroll
      for (int img = 0; img < IMG; ++img) s += d[img * kTop + o] * in[img * kTop + i];
      part[w_off + e] += s;
    }
    for (int o = threadIdx.x; o < O; o += kThreads) {
      acc_t s = 0;
#pragma unroll
      for (int img = 0; img < IMG; ++img) s += d[img * kTop + o];
      part[b_off + o] += s;
    }
  }
  if (!down) return;
  for (int e = threadIdx.x; e < IMG * I; e += kThreads) {
    const int img = e / I, i = e - img * I;
    acc_t g = 0;
    for (int o = 0; o < O; ++o) g += acc_t(W[o * I + i]) * d[img * kTop + o];
    dx[img * kTop + i] = g * slope(in[img * kTop + i]);
  }
}

// A subsampling layer's weight and bias grads: C channels, d its
// pre-activation grads (C planes of OW x OW per image, `dstride` apart), its
// input the saved plane at in_off (IW = 2 OW wide).
template <typename scalar_t, typename acc_t, int IMG, int C, int OW>
__device__ LENET5_PHASE void subsample_grads(
    const Backward<scalar_t, acc_t>& b, const acc_t* d, int dstride, int in_off, acc_t* red,
    int64_t w_off, int64_t b_off) {
  constexpr int plane = OW * OW, IW = 2 * OW;
  // Entries 0..C-1: the weights' grads; C..2C-1: the biases'.
  const acc_t s = entry_sums<acc_t>(2 * C, IMG * plane, red, [&](int e, int j) {
    const int c = e % C, img = j / plane, q = j - img * plane;
    const acc_t dv = d[img * dstride + c * plane + q];
    if (e >= C) return dv;
    const int y = 2 * (q / OW), x = 2 * (q % OW), o = in_off + c * IW * IW + y * IW + x;
    const acc_t sum =
        (b.act(img, o) + b.act(img, o + 1)) + (b.act(img, o + IW) + b.act(img, o + IW + 1));
    return dv * sum * acc_t(0.25);
  });
  if (static_cast<int>(threadIdx.x) < C) b.part[w_off + threadIdx.x] += s;
  else if (static_cast<int>(threadIdx.x) < 2 * C) b.part[b_off + threadIdx.x - C] += s;
}

// d(C3) from d(S4): f'(C3) * s4w / 4 * d(S4) of the window; S2 staged too.
template <typename scalar_t, typename acc_t, int IMG>
__device__ LENET5_PHASE void c3_grad(
    const Params<scalar_t>& p, const Backward<scalar_t, acc_t>& b, const acc_t* dtop, acc_t* P) {
  for (int i = threadIdx.x; i < IMG * kS2Size; i += kThreads) {
    const int img = i / kS2Size, r = i - img * kS2Size;
    P[img * kRegionP + r] = b.act(img, kOffS2 + r);
  }
  for (int i = threadIdx.x; i < IMG * kC3 * kC3Plane; i += kThreads) {
    const int img = i / (kC3 * kC3Plane), r = i - img * kC3 * kC3Plane;
    const int o = r / kC3Plane, y = (r % kC3Plane) / kH3, x = r % kH3;
    const acc_t ds4 = dtop[img * kTop + o * kS4Plane + (y / 2) * kH4 + x / 2];
    P[img * kRegionP + kS2Size + r] =
        acc_t(p.s4w[o]) * acc_t(0.25) * ds4 * slope(b.act(img, kOffC3 + r));
  }
}

// C3's weight and bias grads from d(C3) and S2 (both in P): a thread per
// weight on the table, summed over the group's images and 10x10 positions.
template <typename scalar_t, typename acc_t, int IMG>
__device__ LENET5_PHASE void c3_weight_grads(
    const C3Table& t, const acc_t* P, acc_t* part, int64_t w_off, int64_t b_off) {
  for (int e = threadIdx.x; e < kC3 * kS2 * 25; e += kThreads) {
    const int o = e / (kS2 * 25), c = (e / 25) % kS2, ky = (e % 25) / 5, kx = e % 5;
    if (!t.reads(o, c)) continue;  // off the table: no grad (zero)
    acc_t s = 0;
    for (int img = 0; img < IMG; ++img) {
      const acc_t* d = P + img * kRegionP + kS2Size + o * kC3Plane;
      const acc_t* x = P + img * kRegionP + c * kS2Plane + ky * kH2 + kx;
      for (int y = 0; y < kH3; ++y)
#pragma unroll
        for (int xx = 0; xx < kH3; ++xx) s += d[y * kH3 + xx] * x[y * kH2 + xx];
    }
    part[w_off + e] += s;
  }
  for (int o = threadIdx.x; o < kC3; o += kThreads) {
    acc_t s = 0;
    for (int img = 0; img < IMG; ++img)
      for (int q = 0; q < kC3Plane; ++q) s += P[img * kRegionP + kS2Size + o * kC3Plane + q];
    part[b_off + o] += s;
  }
}

// The grad at (qy, qx) of a 5x5 correlation's input (IW wide) from one output
// plane d (OW = IW - 4 wide) and its kernel w: a gather over the taps.
template <typename scalar_t, typename acc_t, int IW>
__device__ __forceinline__ acc_t conv_input_grad(const acc_t* d, const scalar_t* __restrict__ w,
                                                 int qy, int qx) {
  constexpr int OW = IW - 4;
  acc_t g = 0;
  for (int ky = max(0, qy - OW + 1); ky <= min(4, qy); ++ky)
    for (int kx = max(0, qx - OW + 1); kx <= min(4, qx); ++kx)
      g += acc_t(w[ky * 5 + kx]) * d[(qy - ky) * OW + (qx - kx)];
  return g;
}

// d(S2) = f'(S2) * the grad C3's table connections send back, into Q.
template <typename scalar_t, typename acc_t, int IMG>
__device__ LENET5_PHASE void s2_grad(
    const Params<scalar_t>& p, const C3Table& t, const acc_t* P, acc_t* Q) {
  for (int i = threadIdx.x; i < IMG * kS2Size; i += kThreads) {
    const int img = i / kS2Size, r = i - img * kS2Size;
    const int c = r / kS2Plane, qy = (r % kS2Plane) / kH2, qx = r % kH2;
    acc_t g = 0;
    for (int o = 0; o < kC3; ++o) {
      if (!t.reads(o, c)) continue;
      g += conv_input_grad<scalar_t, acc_t, kH2>(P + img * kRegionP + kS2Size + o * kC3Plane,
                                                 p.c3w + (o * kS2 + c) * 25, qy, qx);
    }
    Q[img * kRegionQ + r] = g * slope(P[img * kRegionP + r]);
  }
}

// C1's grads, one channel at a time: d(C1) of channel c (from d(S2) in Q) into
// P after the input; its 25 weight grads and bias grad; its share of the input
// grad added to gx (in S), in channel order.
template <typename scalar_t, typename acc_t, int IMG>
__device__ LENET5_PHASE void c1_backward(
    const Params<scalar_t>& p, const Backward<scalar_t, acc_t>& b, const Plan& plan, const acc_t* Q,
    acc_t* P, acc_t* gx, acc_t* red, int64_t w_off, int64_t b_off) {
  const acc_t* x = P;                 // IMG planes of 32 x 32, kPixels apart
  acc_t* dc1 = P + IMG * kPixels;     // IMG planes of 28 x 28
  for (int c = 0; c < kC1; ++c) {
    for (int i = threadIdx.x; i < IMG * kC1Plane; i += kThreads) {
      const int img = i / kC1Plane, r = i - img * kC1Plane;
      const int y = r / kH1, xx = r % kH1;
      const acc_t ds2 = Q[img * kRegionQ + c * kS2Plane + (y / 2) * kH2 + xx / 2];
      dc1[i] = acc_t(p.s2w[c]) * acc_t(0.25) * ds2 * slope(b.act(img, kOffC1 + c * kC1Plane + r));
    }
    __syncthreads();
    if (plan.params) {
      // Entries 0..24: the taps; 25: the bias.
      const acc_t s = entry_sums<acc_t>(26, IMG * kC1Plane, red, [&](int e, int j) {
        const acc_t dv = dc1[j];
        if (e == 25) return dv;
        const int img = j / kC1Plane, r = j - img * kC1Plane;
        const int y = r / kH1 + e / 5, xx = r % kH1 + e % 5;
        return dv * x[img * kPixels + y * kIn + xx];
      });
      if (threadIdx.x < 25) b.part[w_off + c * 25 + threadIdx.x] += s;
      else if (threadIdx.x == 25) b.part[b_off + c] += s;
    }
    if (plan.input) {
      for (int i = threadIdx.x; i < IMG * kPixels; i += kThreads) {
        const int img = i / kPixels, r = i - img * kPixels;
        gx[i] += conv_input_grad<scalar_t, acc_t, kIn>(
            dc1 + img * kC1Plane, p.c1w + c * 25, r / kIn, r % kIn);
      }
    }
    __syncthreads();  // dc1 is the next channel's
  }
}

// One group's backward, top down (see the file comment). Every thread calls
// it; the plan is uniform over the block.
template <typename scalar_t, typename acc_t, int IMG>
__device__ void backward_group(const Params<scalar_t>& p, const C3Table& t, const Plan& plan,
                               const Backward<scalar_t, acc_t>& b,
                               const scalar_t* __restrict__ x, const scalar_t* __restrict__ gd,
                               scalar_t* __restrict__ gx_out, acc_t* smem) {
  acc_t* P = smem;
  acc_t* Q = P + IMG * kRegionP;
  acc_t* S = Q + IMG * kRegionQ;
  acc_t* red = S + IMG * kRegionS;  // kThreads values
  acc_t* top = S;                   // S4 400, C5 120, F6 84 per image, as saved
  acc_t* dtop = S + IMG * kTop;     // their pre-activation grads, the same layout
  for (int i = threadIdx.x; i < IMG * kTop; i += kThreads) {
    const int img = i / kTop;
    top[i] = b.act(img, kOffS4 + (i - img * kTop));
  }
  __syncthreads();
  rbf_backward<scalar_t, acc_t, IMG>(p, b, gd, top, dtop, plan, grad_off(kGProto));
  __syncthreads();
  if (plan.lowest == 6 && !plan.params) return;
  dense_backward<scalar_t, acc_t, IMG, kF6, kC5>(p.f6w, dtop + kS4Size + kC5, top + kS4Size,
                                                 dtop + kS4Size, b.part, grad_off(kGF6W),
                                                 grad_off(kGF6B), plan.params, plan.lowest < 6);
  __syncthreads();
  if (plan.lowest == 6) return;
  dense_backward<scalar_t, acc_t, IMG, kC5, kS4Size>(p.c5w, dtop + kS4Size, top, dtop, b.part,
                                                     grad_off(kGC5W), grad_off(kGC5B), plan.params,
                                                     plan.lowest < 5);
  __syncthreads();
  if (plan.lowest == 5) return;
  if (plan.params)
    subsample_grads<scalar_t, acc_t, IMG, kS4, kH4>(b, dtop, kTop, kOffC3, red, grad_off(kGS4W),
                                                    grad_off(kGS4B));
  c3_grad<scalar_t, acc_t, IMG>(p, b, dtop, P);
  __syncthreads();
  if (plan.params)
    c3_weight_grads<scalar_t, acc_t, IMG>(t, P, b.part, grad_off(kGC3W), grad_off(kGC3B));
  if (plan.lowest < 3) s2_grad<scalar_t, acc_t, IMG>(p, t, P, Q);
  __syncthreads();
  if (plan.lowest == 3) return;
  if (plan.params)
    subsample_grads<scalar_t, acc_t, IMG, kS2, kH2>(b, Q, kRegionQ, kOffC1, red, grad_off(kGS2W),
                                                    grad_off(kGS2B));
  // P's S2 and d(C3) are spent: the input (C1's weight grad reads it), and
  // in S the input grad's accumulators (the top layers' values are spent).
  for (int i = threadIdx.x; i < IMG * kPixels; i += kThreads) {
    const int img = i / kPixels;
    P[i] = img < b.valid ? acc_t(x[i]) : acc_t(0);
    if (plan.input) S[i] = acc_t(0);
  }
  __syncthreads();
  c1_backward<scalar_t, acc_t, IMG>(p, b, plan, Q, P, S, red, grad_off(kGC1W), grad_off(kGC1B));
  if (!plan.input) return;
  for (int i = threadIdx.x; i < b.valid * kPixels; i += kThreads) gx_out[i] = scalar_t(S[i]);
}

// Block b takes groups b, b + gridDim.x, ...; part: gridDim.x rows of total
// partial sums (null when no parameter or prototype grad is asked).
// At most 128 registers a thread: 2 blocks per SM's 64 K registers.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads, 2)
    backward_kernel(const scalar_t* __restrict__ gd, const scalar_t* __restrict__ saved,
                    const scalar_t* __restrict__ x, Params<scalar_t> p,
                    const bool* __restrict__ table, Plan plan, int64_t total,
                    acc_t* __restrict__ part, scalar_t* __restrict__ gx, int64_t n) {
  constexpr int IMG = kBackImages<acc_t>;
  const C3Table t = load_table(table);
  LENETALEX_SHARED(acc_t, smem, [IMG * kBackwardPerImage + kThreads]);
  acc_t* row = part ? part + blockIdx.x * total : nullptr;
  if (row) {
    for (int64_t e = threadIdx.x; e < total; e += kThreads) row[e] = acc_t(0);
    __syncthreads();
  }
  const int64_t groups = (n + IMG - 1) / IMG;
  for (int64_t g = blockIdx.x; g < groups; g += gridDim.x) {
    const int64_t n0 = g * IMG;
    Backward<scalar_t, acc_t> b;
    b.saved = saved + n0 * kSaved;
    b.valid = static_cast<int>(min(static_cast<int64_t>(IMG), n - n0));
    b.part = row;
    backward_group<scalar_t, acc_t, IMG>(p, t, plan, b, x + n0 * kPixels, gd + n0 * p.k,
                                         gx ? gx + n0 * kPixels : nullptr, smem);
    __syncthreads();  // the next group overwrites shared memory
  }
}

// out[e] = the sum of the blocks' partial sums of entry e, in block order.
template <typename scalar_t, typename acc_t>
__global__ void reduce_kernel(const acc_t* __restrict__ part, scalar_t* __restrict__ out,
                              int64_t total, int rows) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= total) return;
  acc_t s = part[e];
  for (int r = 1; r < rows; ++r) s += part[r * total + e];
  out[e] = scalar_t(s);
}

// ---------------------------------------------------------------- entries

// The parameters, contiguous; the optional ones (the backward has no biases)
// may be undefined.
template <typename scalar_t>
Params<scalar_t> params_of(const std::array<at::Tensor, 13>& a, int64_t k) {
  const scalar_t* q[13];
  for (int i = 0; i < 13; ++i) q[i] = a[i].defined() ? a[i].const_data_ptr<scalar_t>() : nullptr;
  return Params<scalar_t>{q[0], q[1], q[2], q[3], q[4],  q[5],  q[6],
                          q[7], q[8], q[9], q[10], q[11], q[12], static_cast<int>(k)};
}

// The grid: a block per group, at most `cap` blocks (each then takes several
// groups, in order). LENETALEX_LENET5_CUDA_MAX_BLOCKS lowers the cap, for the
// tests: several groups per block, as at a large batch, on a few images. The
// backward's sums depend on the cap (one row of partial sums per block), so
// it is not for tuning.
unsigned grid_for(int64_t groups, int64_t cap) {
  const char* env = std::getenv("LENETALEX_LENET5_CUDA_MAX_BLOCKS");
  if (env && *env) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    TORCH_CHECK_VALUE(*end == '\0' && v >= 1, "LENETALEX_LENET5_CUDA_MAX_BLOCKS must be a "
                      "positive integer, got '", env, "'");
    cap = std::min<int64_t>(cap, v);
  }
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(groups, cap)));
}

std::tuple<at::Tensor, at::Tensor> lenet5_cuda(
    const at::Tensor& input, const at::Tensor& c1_weight, const at::Tensor& c1_bias,
    const at::Tensor& s2_weight, const at::Tensor& s2_bias, const at::Tensor& c3_weight,
    const at::Tensor& c3_bias, const at::Tensor& s4_weight, const at::Tensor& s4_bias,
    const at::Tensor& c5_weight, const at::Tensor& c5_bias, const at::Tensor& f6_weight,
    const at::Tensor& f6_bias, const at::Tensor& prototypes, const at::Tensor& c3_table,
    bool save) {
  const int64_t k = check_forward(input, c1_weight, c1_bias, s2_weight, s2_bias, c3_weight,
                                  c3_bias, s4_weight, s4_bias, c5_weight, c5_bias, f6_weight,
                                  f6_bias, prototypes, c3_table, Backend::Cuda);
  TORCH_CHECK_VALUE(k <= INT32_MAX / kF6, "lenet5: too many prototypes (", k, ")");
  c10::cuda::CUDAGuard guard(input.device());
  const int64_t n = input.size(0);
  at::Tensor dist = at::empty({n, k}, input.options());
  at::Tensor saved = at::empty({save ? saved_numel(n) : 0}, input.options());
  if (n == 0) return {dist, saved};
  const std::array<at::Tensor, 13> a = {
      c1_weight.contiguous(), c1_bias.contiguous(), s2_weight.contiguous(),
      s2_bias.contiguous(),   c3_weight.contiguous(), c3_bias.contiguous(),
      s4_weight.contiguous(), s4_bias.contiguous(), c5_weight.contiguous(),
      c5_bias.contiguous(),   f6_weight.contiguous(), f6_bias.contiguous(),
      prototypes.contiguous()};
  const at::Tensor table = c3_table.contiguous();
  const at::Tensor x = input.contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "lenet5_cuda",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int64_t IMG = kImages<acc_t>;
    // With save, the padding images up to saved_numel's multiple of kBlock too.
    const int64_t images = save ? saved_numel(n) / kSaved : n;
    const int64_t groups = (images + IMG - 1) / IMG;
    launch_bounded<kThreads>(forward_kernel<scalar_t, acc_t>, grid_for(groups, kForwardBlocks),
                             kThreads, 0, stream, x.const_data_ptr<scalar_t>(),
                             params_of<scalar_t>(a, k), table.const_data_ptr<bool>(),
                             dist.mutable_data_ptr<scalar_t>(),
                             save ? saved.mutable_data_ptr<scalar_t>() : nullptr, n, groups);
  });
  return {dist, saved};
}

// Which grads to compute for output_mask (the CPU's rule): the backward stops
// at the lowest layer asked for.
Plan plan_of(const std::array<bool, 14>& mask) {
  Plan plan;
  plan.input = mask[0];
  plan.proto = mask[13];
  plan.params = false;
  for (int i = 1; i < 13; ++i) plan.params = plan.params || mask[i];
  const int lowest_of[14] = {0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 6};
  plan.lowest = 6;
  for (int i = 0; i < 14; ++i)
    if (mask[i]) plan.lowest = std::min(plan.lowest, lowest_of[i]);
  if (plan.lowest == 4) plan.lowest = 3;  // S4's grads come with C3's pass
  return plan;
}

std::vector<at::Tensor> lenet5_backward_cuda(
    const at::Tensor& grad_distances, const at::Tensor& activations, const at::Tensor& input,
    const at::Tensor& c1_weight, const at::Tensor& s2_weight, const at::Tensor& c3_weight,
    const at::Tensor& s4_weight, const at::Tensor& c5_weight, const at::Tensor& f6_weight,
    const at::Tensor& prototypes, const at::Tensor& c3_table, std::array<bool, 14> mask) {
  const int64_t k = check_backward(grad_distances, activations, input, c1_weight, s2_weight,
                                   c3_weight, s4_weight, c5_weight, f6_weight, prototypes,
                                   c3_table, Backend::Cuda);
  TORCH_CHECK_VALUE(k <= INT32_MAX / kF6, "lenet5_backward: too many prototypes (", k, ")");
  c10::cuda::CUDAGuard guard(input.device());
  const int64_t n = input.size(0);
  const auto opts = input.options();
  const int64_t total = grad_total(k);
  const Plan plan = plan_of(mask);
  at::Tensor all = at::zeros({total}, opts);
  at::Tensor gx = mask[0] ? at::empty({n, 1, kIn, kIn}, opts) : at::empty({0}, opts);
  bool any = false;
  for (bool m : mask) any = any || m;
  if (n > 0 && any) {
    const std::array<at::Tensor, 13> a = {
        c1_weight.contiguous(), at::Tensor(), s2_weight.contiguous(), at::Tensor(),
        c3_weight.contiguous(), at::Tensor(), s4_weight.contiguous(), at::Tensor(),
        c5_weight.contiguous(), at::Tensor(), f6_weight.contiguous(), at::Tensor(),
        prototypes.contiguous()};
    const at::Tensor table = c3_table.contiguous();
    const at::Tensor x = input.contiguous(), gd = grad_distances.contiguous();
    const at::Tensor saved = activations.contiguous();
    const auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                    "lenet5_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      constexpr int64_t IMG = kBackImages<acc_t>;
      const int64_t blocks = grid_for((n + IMG - 1) / IMG, kBackwardBlocks);
      const bool reduce = plan.params || plan.proto;
      const auto acc_opts = opts.dtype(c10::CppTypeToScalarType<acc_t>::value);
      at::Tensor part = reduce ? at::empty({blocks, total}, acc_opts) : at::Tensor();
      launch_bounded<kThreads>(
          backward_kernel<scalar_t, acc_t>, blocks, kThreads, 0, stream,
          gd.const_data_ptr<scalar_t>(), saved.const_data_ptr<scalar_t>(),
          x.const_data_ptr<scalar_t>(), params_of<scalar_t>(a, k), table.const_data_ptr<bool>(),
          plan, total,
          reduce ? part.mutable_data_ptr<acc_t>() : nullptr,
          mask[0] ? gx.mutable_data_ptr<scalar_t>() : nullptr, n);
      if (reduce) {
        launch(reduce_kernel<scalar_t, acc_t>,
               static_cast<unsigned>((total + kThreads - 1) / kThreads), kThreads, 0,
               stream, part.const_data_ptr<acc_t>(), all.mutable_data_ptr<scalar_t>(), total,
               static_cast<int>(blocks));
      }
    });
  }
  // Each grad its own tensor of its parameter's shape (outputs must not alias).
  const at::Tensor* shapes[14] = {&input,     &c1_weight, nullptr, &s2_weight, nullptr,
                                  &c3_weight, nullptr,    &s4_weight, nullptr, &c5_weight,
                                  nullptr,    &f6_weight, nullptr, &prototypes};
  const int64_t bias_len[14] = {0, 0, kC1, 0, kS2, 0, kC3, 0, kS4, 0, kC5, 0, kF6, 0};
  std::vector<at::Tensor> out(14);
  out[0] = gx;
  for (int i = 1; i < 14; ++i) {
    if (!mask[i]) {
      out[i] = at::empty({0}, opts);
      continue;
    }
    const int64_t len = shapes[i] ? shapes[i]->numel() : bias_len[i];
    at::Tensor v = all.narrow(0, grad_off(i), len).clone();
    out[i] = shapes[i] ? v.view(shapes[i]->sizes()) : v;
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(LENETALEX_NS, LENETALEX_CUDA_KEY, m) {
  m.impl("lenet5", &lenet5_cuda);
  m.impl("lenet5_backward", &lenet5_backward_cuda);
}

}  // namespace lenet5
}  // namespace lenetalex
