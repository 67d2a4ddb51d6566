// CPU only: ask gcc for 512-bit vectors where the variant has AVX-512.
//
// gcc tunes most AVX-512 cores for 256-bit auto-vectorization; the
// element-wise loops of the fused epilogues and of LRN run ~25% faster with
// 512-bit vectors (measured on the AVX-512 Xeon of bench/results/). Two forms:
//   LENETALEX_WIDE_VECTORS           on one function. The preference is lost
//                                    when such a function is inlined into a
//                                    caller without it, so hot row helpers are
//                                    noinline (a call per row is cheap);
//   LENETALEX_WIDE_VECTORS_BEGIN/END around a whole file's kernels (lambdas
//                                    included, which an attribute misses).
// Elsewhere (other compilers, variants without AVX-512) they are empty.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
#define LENETALEX_WIDE_VECTORS __attribute__((target("prefer-vector-width=512")))
#define LENETALEX_WIDE_VECTORS_BEGIN \
  _Pragma("GCC push_options") _Pragma("GCC target(\"prefer-vector-width=512\")")
#define LENETALEX_WIDE_VECTORS_END _Pragma("GCC pop_options")
#else
#define LENETALEX_WIDE_VECTORS
#define LENETALEX_WIDE_VECTORS_BEGIN
#define LENETALEX_WIDE_VECTORS_END
#endif
