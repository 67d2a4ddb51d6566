// One warp-wide tensor-core step, D = A * B + C with A 16 x 16 (row-major), B
// 16 x 8 (column-major), C and D 16 x 8 in float: PTX's
// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 (sm_80+).
//
// Fragments (PTX ISA, "Matrix fragments for mma.m16n8k16"): lane = 4 * gid +
// tig (gid 0..7, tig 0..3); every register holds two 16-bit values, the lower
// index in the low half.
//   a[0] = A[gid][2 tig, +1]      a[1] = A[gid + 8][2 tig, +1]
//   a[2] = A[gid][2 tig + 8, +9]  a[3] = A[gid + 8][2 tig + 8, +9]
//   b[0] = B[2 tig, +1][gid]      b[1] = B[2 tig + 8, +9][gid]
//   c[0], c[1] = C[gid][2 tig, +1]   c[2], c[3] = C[gid + 8][2 tig, +1]
//
// Where the instruction does not exist (the CUDA emulator, which runs this on
// the CPU, and GPUs before sm_80, which the dispatch never sends here) the same
// function computes the same product from the same fragments exchanged through
// shared memory: each lane reads the A rows and B columns of its four outputs
// from the slots of the lanes that hold them. So the emulator checks everything around the
// instruction (the fragment layout, the shared-memory tiles, the loads and the
// epilogue) and this reading of the layout; only the instruction's own
// summation order differs (products of 16-bit values are exact in float either
// way).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "cuda/launch.cuh"

namespace lenetalex {

template <typename scalar_t>
constexpr bool kHasMma =
    std::is_same<scalar_t, c10::Half>::value || std::is_same<scalar_t, c10::BFloat16>::value;

// Two consecutive 16-bit values (p 4-byte aligned) as one fragment register.
template <typename scalar_t>
__device__ __forceinline__ uint32_t load_pair(const scalar_t* p) {
  static_assert(sizeof(scalar_t) == 2, "fragments hold 16-bit values");
#if defined(LENETALEX_CUDA_EMU)
  uint32_t r;
  std::memcpy(&r, p, sizeof(r));
  return r;
#else
  return *reinterpret_cast<const uint32_t*>(p);
#endif
}

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ < 800
// The twin's exchange slots: six registers per lane, for blocks of up to 1024
// threads (24 KiB of shared memory, only where the twin runs).
constexpr int kMmaTwinWarps = 32;

// The value in one half of a fragment register.
template <typename scalar_t>
__device__ __forceinline__ float half_of(uint32_t r, int hi) {
  return static_cast<float>(scalar_t(uint16_t(hi ? r >> 16 : r & 0xffffu), scalar_t::from_bits()));
}
// a[0] . b[0] + a[2] . b[1] over one lane's k range: 2 tig, +1, +8, +9.
template <typename scalar_t>
__device__ __forceinline__ float dot4(uint32_t a_lo, uint32_t a_hi, uint32_t b_lo, uint32_t b_hi) {
  return half_of<scalar_t>(a_lo, 0) * half_of<scalar_t>(b_lo, 0) +
         half_of<scalar_t>(a_lo, 1) * half_of<scalar_t>(b_lo, 1) +
         half_of<scalar_t>(a_hi, 0) * half_of<scalar_t>(b_hi, 0) +
         half_of<scalar_t>(a_hi, 1) * half_of<scalar_t>(b_hi, 1);
}
#endif

// c += A * B for the warp's fragments; every lane of the warp must call it.
template <typename scalar_t>
__device__ __forceinline__ void mma_m16n8k16(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  static_assert(kHasMma<scalar_t>, "mma_m16n8k16 takes float16 or bfloat16 fragments");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same<scalar_t, c10::Half>::value) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
  // Every lane puts its six registers in its warp's slots, the warp syncs,
  // each lane reads the A rows and B columns of its four outputs (lane 4 gid +
  // src holds A rows gid, gid + 8 at k = 2 src, +1, +8, +9; lane 4 n + src
  // holds B column n at the same k), and the warp syncs again before the next
  // step overwrites the slots. Two warp operations per step: the emulator
  // switches fibers at each, so this is ~8x cheaper there than 16 shuffles.
  LENETALEX_SHARED(uint32_t, slots, [kMmaTwinWarps][32][6]);
  const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;  // 1-D blocks
  const int gid = lane >> 2, tig = lane & 3;
  uint32_t(&mine)[6] = slots[warp][lane];
  mine[0] = a[0], mine[1] = a[1], mine[2] = a[2], mine[3] = a[3], mine[4] = b[0], mine[5] = b[1];
  __syncwarp();
  for (int src = 0; src < 4; ++src) {
    const uint32_t(&ra)[6] = slots[warp][4 * gid + src];
    for (int j = 0; j < 2; ++j) {
      const uint32_t(&rb)[6] = slots[warp][4 * (2 * tig + j) + src];
      c[j] += dot4<scalar_t>(ra[0], ra[2], rb[4], rb[5]);
      c[2 + j] += dot4<scalar_t>(ra[1], ra[3], rb[4], rb[5]);
    }
  }
  __syncwarp();
#endif
}

}  // namespace lenetalex
