// Scratch memory for the CPU conv kernels, kept per thread between calls.
//
// A kernel call needs a few buffers of up to some MiB (packed planes, tiles,
// Winograd-domain matrices). Fresh buffers of that size are fresh pages every
// call, one page fault and one zeroed page per 4 KiB: on AlexNet conv2's
// forward the kernel spent 18% of the samples there (perf). Scratch hands out
// blocks from a pool owned by the calling thread that keeps its blocks (each
// grows to the largest size asked of it) for the next call. The price: each
// thread keeps the most it has needed (the Winograd path's chunk buffers, up
// to about 32 MB on the calling thread, plus a few MB per worker), as torch's
// CUDA caching allocator keeps its blocks; the memory goes back when the
// thread ends.
//
// Usage: one Scratch per scope, its buffers taken right after it is made;
// a Scratch made inside a parallel region (also on the thread that opened
// it) takes the blocks after its parent's, and gives them back on exit.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <vector>

#include <c10/util/Exception.h>

namespace lenetalex {
inline namespace LENETALEX_ISA_NS {  // one copy per ISA variant: cpu/isa.h
namespace conv_cpu {

class Scratch {
 public:
  Scratch() : base_(pool().used), next_(base_) {}
  ~Scratch() { pool().used = base_; }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  // n values of T (float or double), 64-byte aligned, zero-filled if asked;
  // valid until this Scratch ends.
  template <typename T>
  T* values(int64_t n, bool zero = false) {
    const int64_t size = std::max<int64_t>(n, 16) * int64_t(sizeof(T));
    return static_cast<T*>(bytes(size, zero ? n * int64_t(sizeof(T)) : 0));
  }
  float* floats(int64_t n, bool zero = false) { return values<float>(n, zero); }

 private:
  // A block of at least `size` bytes, its first `zeroed` bytes set to zero.
  void* bytes(int64_t size, int64_t zeroed) {
    Pool& p = pool();
    TORCH_INTERNAL_ASSERT(p.used == next_, "Scratch: buffers taken out of scope order");
    if (next_ == p.blocks.size()) p.blocks.emplace_back();
    Block& b = p.blocks[next_];
    p.used = ++next_;
    if (b.size < size) {
      std::free(b.data);
      b.data = std::aligned_alloc(64, (size + 63) / 64 * 64);
      TORCH_CHECK(b.data != nullptr, "lenetalex: out of memory for ", size,
                  " bytes of scratch");
      b.size = size;
    }
    if (zeroed > 0) std::memset(b.data, 0, zeroed);
    return b.data;
  }

  struct Block {
    void* data = nullptr;
    int64_t size = 0;  // bytes
  };
  struct Pool {
    std::vector<Block> blocks;
    size_t used = 0;
    ~Pool() {
      for (Block& b : blocks) std::free(b.data);
    }
  };
  static Pool& pool() {
    thread_local Pool p;
    return p;
  }
  size_t base_, next_;
};

}  // namespace conv_cpu
}  // namespace LENETALEX_ISA_NS
}  // namespace lenetalex
