// Every file in csrc/cpu is compiled once per instruction-set variant
// (baseline, avx2, avx512; setup.py's "CPU ISA variants" section), as ATen
// compiles its cpu/ kernels once per CPU_CAPABILITY, and the variant in use
// is chosen at run time (csrc/cpu_isa.cpp). Each compile defines
//   LENETALEX_ISA_NS  the variant's namespace (isa_baseline, isa_avx2, isa_avx512)
//   LENETALEX_ISA_ID  its index (cpu_isa.h: 0 baseline, 1 avx2, 2 avx512)
// and the files put everything they define in `inline namespace
// LENETALEX_ISA_NS` inside lenetalex: names read as before, but each variant's
// symbols are its own, so the linker never swaps one variant's inline or
// template code for another's (an AVX-512 copy of a helper in the baseline
// would crash a CPU without AVX-512).
//
// An op file registers its entries with LENETALEX_CPU_KERNEL(op, fn) instead
// of TORCH_LIBRARY_IMPL: every variant stores fn in its table, and the
// baseline compile alone registers, once, a CPU kernel that calls the active
// variant's fn. Switching variants changes one index, never a registration.
// (Such files include <torch/library.h> themselves; this header stays light.)
#pragma once

#include <utility>

#include "cpu_isa.h"

#if !defined(LENETALEX_ISA_NS) || !defined(LENETALEX_ISA_ID)
#error "csrc/cpu files are compiled once per ISA variant: setup.py defines LENETALEX_ISA_NS and LENETALEX_ISA_ID"
#endif

namespace lenetalex {
namespace cpu_isa {

// Calls the active variant's kernel for op. Fn is the entry's own type, the
// same in every variant (they compile one source).
template <Op op, typename Fn>
struct Dispatched;
template <Op op, typename R, typename... Args>
struct Dispatched<op, R (*)(Args...)> {
  static R call(Args... args) {
    return reinterpret_cast<R (*)(Args...)>(kernel(op))(std::forward<Args>(args)...);
  }
};

}  // namespace cpu_isa
}  // namespace lenetalex

#define LENETALEX_ISA_CONCAT_(a, b) a##b
#define LENETALEX_ISA_CONCAT(a, b) LENETALEX_ISA_CONCAT_(a, b)

#if LENETALEX_ISA_ID == 0
#define LENETALEX_CPU_DISPATCHER_(op, fn)                                                    \
  TORCH_LIBRARY_IMPL(lenetalex, CPU, m) {                                                    \
    m.impl(#op, &::lenetalex::cpu_isa::Dispatched<::lenetalex::cpu_isa::Op::op,              \
                                                  decltype(&fn)>::call);                     \
  }
#else
#define LENETALEX_CPU_DISPATCHER_(op, fn)
#endif

// fn in this variant's table (entries not registered with the dispatcher use
// this alone).
#define LENETALEX_CPU_ENTRY(op, fn)                                                          \
  static const bool LENETALEX_ISA_CONCAT(op, _in_table) = ::lenetalex::cpu_isa::add_kernel(  \
      LENETALEX_ISA_ID, ::lenetalex::cpu_isa::Op::op,                                        \
      reinterpret_cast<::lenetalex::cpu_isa::AnyFn>(&fn));

#define LENETALEX_CPU_KERNEL(op, fn) \
  LENETALEX_CPU_ENTRY(op, fn)        \
  LENETALEX_CPU_DISPATCHER_(op, fn)
