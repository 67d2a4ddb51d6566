// The compute limit `lenetalex bench` reports for the CPU: float32
// multiply-adds per second of this ISA variant's widest vectors on every
// intra-op thread, the ceiling a convolution could reach with this variant
// (a 1024^3 matmul, the old limit, runs below it wherever MKL avoids its fast
// paths, e.g. on AMD, so convolutions showed 200% of it).
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdint>

#include "cpu/isa.h"

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace {

#if defined(__AVX512F__)
constexpr int kBytes = 64;
#elif defined(__AVX__)
constexpr int kBytes = 32;
#else
constexpr int kBytes = 16;  // SSE, NEON: the compiler splits or maps the vector
#endif
typedef float Vec __attribute__((vector_size(kBytes)));
constexpr int kLanes = kBytes / 4;
// Independent accumulators: the FMA latency (4-5 cycles) times two FMA ports,
// within the 16 vector registers of AVX2.
constexpr int kChains = 12;

// Runs `iters` rounds of kChains multiply-adds (fused where the variant has
// FMA: gcc contracts a * b + c) and returns a value that depends on them all.
__attribute__((noinline)) float fma_rounds(int64_t iters, float seed) {
  Vec acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = Vec{} + (seed + i);
  const Vec m = Vec{} + 0.999999f, a = Vec{} + 1e-7f;
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = acc[i] * m + a;
    asm volatile("" : "+x"(acc[0]));  // keeps the loop from being folded
  }
  Vec sum = acc[0];
  for (int i = 1; i < kChains; ++i) sum += acc[i];
  float out = 0;
  for (int l = 0; l < kLanes; ++l) out += sum[l];
  return out;
}

// FLOP/s (2 per lane per multiply-add) of iters rounds on every intra-op thread.
double peak_fma_flops(int64_t iters) {
  const int threads = at::get_num_threads();
  volatile float sink = 0;
  const auto t0 = std::chrono::steady_clock::now();
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) sink = sink + fma_rounds(iters, float(t));
  });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * kLanes * kChains * double(iters) * threads / s;
}

}  // namespace

LENETALEX_CPU_ENTRY(peak_fma_flops, peak_fma_flops)

}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
