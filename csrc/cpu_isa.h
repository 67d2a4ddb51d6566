// Which instruction-set variant of the CPU kernels runs (see cpu/isa.h for how
// the variants are built). No torch headers: module.cpp includes this.
#pragma once

#include <string>

namespace lenetalex {
namespace cpu_isa {

// Variants, by index; the names are LENETALEX_CPU_ISA's values.
constexpr int kVariants = 3;  // 0 baseline, 1 avx2, 2 avx512
const char* name(int isa);

// The entries each variant provides: the CPU kernels registered with the
// dispatcher, by schema name, and the bench's peak-FMA microbenchmark.
enum class Op : int {
  conv2d_activation,
  conv2d_activation_backward,
  avg_subsample,
  avg_subsample_backward,
  local_response_norm,
  local_response_norm_backward,
  rbf_distance,
  rbf_distance_backward,
  lenet5,
  lenet5_backward,
  _conv2d_activation_path,  // debug: the conv's path in this variant (cpu/conv2d_activation/plan.h)
  peak_fma_flops,  // double (*)(int64_t iters): cpu/peak_fma.cpp
  count
};

using AnyFn = void (*)();

// A variant's static initializers put its entries in its table.
bool add_kernel(int isa, Op op, AnyFn fn);

// The active variant's entry for op.
AnyFn kernel(Op op);

bool compiled(int isa);   // this binary holds the variant (every entry of it)
bool supported(int isa);  // this CPU can run it

// The active variant. The first call applies LENETALEX_CPU_ISA (unset or
// "auto": the best the CPU runs); a value that names no variant throws
// std::invalid_argument, one this binary or CPU cannot run std::runtime_error.
int active();
// Makes `request` ("auto" or a variant's name) the active variant; throws as
// active() does, the message naming `what` (the variable or argument).
void activate(const std::string& request, const char* what);

// The rule both use, on given facts (tests try it on CPUs they don't have):
// the variant for request, or -1 with *error set and *invalid true when the
// request names no variant.
int choose(const std::string& request, const bool compiled[kVariants],
           const bool supported[kVariants], const char* what, std::string* error, bool* invalid);

}  // namespace cpu_isa
}  // namespace lenetalex
