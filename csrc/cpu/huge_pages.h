// Transparent huge pages for large fresh CPU outputs.
//
// A large output (rbf_distance's 262 MB at N = 65536, K = 1000; avg_subsample's
// 77 MB grad_input on a (64, 96, 56, 56) input) is a fresh, untouched mapping
// from the allocator: filling it costs one page fault and one zeroed page per
// 4 KB, about a third of such a call (perf). Asking for transparent huge pages
// before the first write makes those 2 MB faults instead. Only a hint: a no-op
// where THP is off, on other systems, or on memory already touched.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h

inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr()), bytes = t.nbytes();
  if (bytes < 16 * kHuge) return;
  const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1), hi = (begin + bytes) & ~(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#endif
}

}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
