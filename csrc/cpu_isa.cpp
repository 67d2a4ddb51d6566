// The CPU kernels' variant tables and the choice between them (cpu_isa.h).
// Compiled once, with the compiler's default flags: it runs before any
// variant is known to be safe.
#include "cpu_isa.h"

#include <array>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

namespace lenetalex {
namespace cpu_isa {
namespace {

constexpr const char* kNames[kVariants] = {"baseline", "avx2", "avx512"};
// What each variant's compile flags (setup.py) let the compiler use, in words.
constexpr const char* kNeeds[kVariants] = {"SSE4.2 and POPCNT", "AVX2, FMA and F16C",
                                           "AVX-512 F/BW/DQ/VL, AVX2, FMA and F16C"};
constexpr int kOps = int(Op::count);

using Table = std::array<AnyFn, kOps>;
std::array<Table, kVariants>& tables() {
  static std::array<Table, kVariants> t{};  // filled by static initializers, any order
  return t;
}

std::atomic<int> g_active{-1};
std::mutex g_mutex;

std::string list(const bool ok[kVariants]) {
  std::string s;
  for (int i = 0; i < kVariants; ++i)
    if (ok[i]) s += (s.empty() ? "" : ", ") + std::string(kNames[i]);
  return s.empty() ? "none" : s;
}

void facts(bool c[kVariants], bool s[kVariants]) {
  for (int i = 0; i < kVariants; ++i) c[i] = compiled(i), s[i] = supported(i);
}

}  // namespace

const char* name(int isa) { return isa >= 0 && isa < kVariants ? kNames[isa] : "none"; }

bool add_kernel(int isa, Op op, AnyFn fn) {
  tables()[isa][int(op)] = fn;
  return true;
}

bool compiled(int isa) {
  for (AnyFn f : tables()[isa])
    if (!f) return false;
  return true;
}

bool supported(int isa) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  switch (isa) {
    case 0: return __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("popcnt");
    case 1: return avx2;
    case 2:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  }
  return false;
#else
  return isa == 0;  // elsewhere the baseline, built with the compiler's defaults, is all
#endif
}

int choose(const std::string& request, const bool c[kVariants], const bool s[kVariants],
           const char* what, std::string* error, bool* invalid) {
  *invalid = false;
  bool ok[kVariants];
  for (int i = 0; i < kVariants; ++i) ok[i] = c[i] && s[i];
  if (request.empty() || request == "auto") {
    for (int i = kVariants - 1; i >= 0; --i)
      if (ok[i]) return i;
    *error = std::string("lenetalex: no CPU kernel variant runs on this CPU (compiled: ") + list(c) +
             "; the baseline needs " + kNeeds[0] + ")";
    return -1;
  }
  for (int i = 0; i < kVariants; ++i) {
    if (request != kNames[i]) continue;
    if (ok[i]) return i;
    *error = std::string(what) + "=" + request + ": " +
             (c[i] ? std::string("this CPU cannot run the ") + request + " kernels (they need " +
                         kNeeds[i] + ")"
                   : std::string("this build of lenetalex has no ") + request +
                         " kernels (compiled: " + list(c) + ")") +
             "; variants this machine runs: " + list(ok);
    return -1;
  }
  *invalid = true;
  *error = std::string(what) + "=" + request + ": expected auto, baseline, avx2 or avx512";
  return -1;
}

void activate(const std::string& request, const char* what) {
  bool c[kVariants], s[kVariants];
  facts(c, s);
  std::string error;
  bool invalid = false;
  const int isa = choose(request, c, s, what, &error, &invalid);
  if (isa < 0) {
    if (invalid) throw std::invalid_argument(error);
    throw std::runtime_error(error);
  }
  g_active.store(isa, std::memory_order_release);
}

int active() {
  int isa = g_active.load(std::memory_order_acquire);
  if (isa >= 0) return isa;
  std::lock_guard<std::mutex> lock(g_mutex);
  isa = g_active.load(std::memory_order_acquire);
  if (isa < 0) {
    const char* env = std::getenv("LENETALEX_CPU_ISA");
    activate(env ? env : "", "LENETALEX_CPU_ISA");
    isa = g_active.load(std::memory_order_acquire);
  }
  return isa;
}

AnyFn kernel(Op op) { return tables()[active()][int(op)]; }

}  // namespace cpu_isa
}  // namespace lenetalex
