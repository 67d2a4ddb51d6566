// Fibers for the CUDA emulator: one per CUDA thread of the block being run,
// each on its own small stack with a guard page below it, switched in user
// space. On x86-64 a few lines of assembly save and restore the callee-saved
// registers; elsewhere ucontext's swapcontext does (a system call per switch,
// about 4x slower overall). Under AddressSanitizer every switch is announced
// to it, so it tracks which stack is live.
#pragma once

#include <cstddef>

namespace cuda_emu {

struct FiberStack {
  char* base = nullptr;  // lowest usable byte (the guard page is below it)
  size_t size = 0;
};

// A suspended execution: the saved stack pointer (assembly switch) or a
// ucontext, plus what AddressSanitizer needs to know about the stack.
struct FiberContext {
  void* sp = nullptr;
  void* ucontext = nullptr;  // the portable fallback's ucontext_t
  void* asan_fake_stack = nullptr;
  const void* stack_bottom = nullptr;
  size_t stack_size = 0;
};

// Stack size per fiber: 64 KiB (256 KiB under AddressSanitizer, whose frames
// are larger), overridable with LENETALEX_EMU_STACK_KIB.
size_t fiber_stack_size();
FiberStack allocate_stack(size_t size);
void free_stack(FiberStack& stack);

// Makes `ctx` start `entry()` on `stack` when first switched to; entry never
// returns. index: the fiber's place in its block (staggers the stack tops).
void prepare_fiber(FiberContext& ctx, const FiberStack& stack, void (*entry)(), unsigned index);
// Saves the running execution in `from` and resumes `to`. exiting: `from`
// will never be resumed (its stack is dropped).
void switch_fiber(FiberContext& from, FiberContext& to, bool exiting = false);
// Called first thing in a fiber's entry: completes the switch that started it;
// `scheduler` learns its stack extent the first time.
void fiber_started(FiberContext& from);

}  // namespace cuda_emu
