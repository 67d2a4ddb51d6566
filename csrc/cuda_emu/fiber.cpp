// Fiber stacks and context switches for the CUDA emulator (see fiber.h).
#include "cuda_emu/fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <new>

#include <c10/util/Exception.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LENETALEX_EMU_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define LENETALEX_EMU_ASAN 1
#endif

#if defined(LENETALEX_EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__x86_64__) && !defined(LENETALEX_EMU_UCONTEXT)
#define LENETALEX_EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

namespace cuda_emu {

size_t fiber_stack_size() {
  static const size_t size = [] {
    if (const char* v = std::getenv("LENETALEX_EMU_STACK_KIB")) return size_t(std::atol(v)) << 10;
#if defined(LENETALEX_EMU_ASAN)
    return size_t(256) << 10;
#else
    return size_t(64) << 10;
#endif
  }();
  return size;
}

FiberStack allocate_stack(size_t size) {
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  size = (size + page - 1) / page * page;
  void* p = mmap(nullptr, size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  TORCH_CHECK(p != MAP_FAILED, "CUDA emulator: could not map a fiber stack of ", size, " bytes");
  // Guard page: a fiber that overflows its stack faults instead of writing
  // into the next fiber's.
  TORCH_CHECK(mprotect(p, page, PROT_NONE) == 0, "CUDA emulator: mprotect of a guard page failed");
  return {static_cast<char*>(p) + page, size};
}

void free_stack(FiberStack& stack) {
  if (stack.base == nullptr) return;
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  munmap(stack.base - page, stack.size + page);
  stack = {};
}

#if defined(LENETALEX_EMU_ASM_SWITCH)
// lenetalex_emu_switch(void** save_sp, void* load_sp): pushes the callee-saved
// registers, stores rsp in *save_sp, loads load_sp and pops the same from
// there. Everything else is caller-saved in the System V ABI, so the compiler
// has already spilled what it needs. The SSE and x87 control words are left
// alone: every fiber runs with the block's (kernels never change them), and
// ldmxcsr/fldcw would cost more than the rest of the switch.
asm(R"(
  .text
  .p2align 4
  .type lenetalex_emu_switch, @function
lenetalex_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size lenetalex_emu_switch, .-lenetalex_emu_switch
)");
extern "C" void lenetalex_emu_switch(void** save_sp, void* load_sp);
#endif

void prepare_fiber(FiberContext& ctx, const FiberStack& stack, void (*entry)(), unsigned index) {
  ctx.stack_bottom = stack.base;
  ctx.stack_size = stack.size;
  ctx.asan_fake_stack = nullptr;
#if defined(LENETALEX_EMU_ASAN)
  // A fiber never returns from its entry: the redzones of its last frames stay
  // poisoned in a reused stack unless cleared here.
  ASAN_UNPOISON_MEMORY_REGION(stack.base, stack.size);
#endif
#if defined(LENETALEX_EMU_ASM_SWITCH)
  // The frame lenetalex_emu_switch pops: six registers, then `ret` into entry
  // with rsp = 8 mod 16, as after a call.
  // Stack tops staggered by a cache line per fiber: equal offsets in 64 KiB
  // stacks would all fall in the same L1 sets and evict each other at every
  // switch (measured: 90% of the switch's time went to its first pop).
  uintptr_t top = (reinterpret_cast<uintptr_t>(stack.base) + stack.size - (index % 64) * 64) &
                  ~uintptr_t(15);
  uint64_t* sp = reinterpret_cast<uint64_t*>(top);
  *--sp = 0;                                    // entry's (absent) return address
  *--sp = reinterpret_cast<uint64_t>(entry);    // popped by ret
  for (int i = 0; i < 6; ++i) *--sp = 0;        // rbp rbx r12 r13 r14 r15
  ctx.sp = sp;
#else
  auto* uc = static_cast<ucontext_t*>(ctx.ucontext);
  if (uc == nullptr) {
    uc = new ucontext_t;
    ctx.ucontext = uc;
  }
  TORCH_CHECK(getcontext(uc) == 0, "CUDA emulator: getcontext failed");
  uc->uc_stack.ss_sp = stack.base;
  uc->uc_stack.ss_size = stack.size - (index % 64) * 64;
  uc->uc_link = nullptr;
  makecontext(uc, entry, 0);
#endif
}

void switch_fiber(FiberContext& from, FiberContext& to, bool exiting) {
#if defined(LENETALEX_EMU_ASAN)
  __sanitizer_start_switch_fiber(exiting ? nullptr : &from.asan_fake_stack, to.stack_bottom,
                                 to.stack_size);
#else
  (void)exiting;
#endif
#if defined(LENETALEX_EMU_ASM_SWITCH)
  lenetalex_emu_switch(&from.sp, to.sp);
#else
  if (from.ucontext == nullptr) from.ucontext = new ucontext_t;
  swapcontext(static_cast<ucontext_t*>(from.ucontext), static_cast<ucontext_t*>(to.ucontext));
#endif
#if defined(LENETALEX_EMU_ASAN)
  // Back in `from`; the previous stack's extent is learnt here (the
  // scheduler's own stack is not known in advance).
  const void* bottom = nullptr;
  size_t size = 0;
  __sanitizer_finish_switch_fiber(from.asan_fake_stack, &bottom, &size);
#endif
}

void fiber_started(FiberContext& from) {
#if defined(LENETALEX_EMU_ASAN)
  // The first fiber a thread runs starts from its scheduler, whose stack
  // extent is learnt here (later fibers may start from other fibers).
  const void* bottom = nullptr;
  size_t size = 0;
  __sanitizer_finish_switch_fiber(nullptr, &bottom, &size);
  if (from.stack_bottom == nullptr) {
    from.stack_bottom = bottom;
    from.stack_size = size;
  }
#else
  (void)from;
#endif
}

}  // namespace cuda_emu
