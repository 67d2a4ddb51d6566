// The CUDA emulator's runtime: launches, the block scheduler and its checkers
// (barriers, warp operations, shared memory, deadlocks). See cuda_emu.h.
#include "cuda_emu/runtime.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include <c10/util/Exception.h>

#include "cuda_emu/fiber.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define LENETALEX_EMU_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define LENETALEX_EMU_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define LENETALEX_EMU_POISON(p, n) ((void)(p), (void)(n))
#define LENETALEX_EMU_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace cuda_emu {

thread_local const BlockContext* tl_block = nullptr;
thread_local const ThreadContext* tl_thread = nullptr;

namespace {

// CUDA's limits on every architecture we build for.
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockZ = 64;
constexpr unsigned kMaxGridX = 0x7fffffffu;
constexpr unsigned kMaxGridYZ = 65535;
constexpr size_t kSharedLimit = 48 * 1024;  // without cudaFuncSetAttribute opt-in
// Arena layout: regions 16-byte aligned, with poisoned gaps between them so
// that under AddressSanitizer an access past one region does not land in the next.
constexpr size_t kSharedGap = 64;
constexpr size_t kMaxSharedRegions = 32;
constexpr size_t kArenaBytes = kSharedLimit + (kMaxSharedRegions + 1) * (kSharedGap + 64);

std::atomic<int> g_schedule{-1};  // Schedule, -1: not yet read from the environment
std::atomic<uint64_t> g_seed{0};

enum class State { Ready, Barrier, Warp, Exited };

struct Fiber {
  FiberContext ctx;
  FiberStack stack;
  ThreadContext thread;
  unsigned linear = 0;
  State state = State::Ready;
  Site site{};  // where it waits
  // Warp operation: kind, mask, own value, lane argument, width; result.
  bool is_shuffle = false;
  ShuffleKind kind = ShuffleKind::Index;
  unsigned mask = 0;
  uint64_t value = 0, result = 0;
  int arg = 0, width = 32;
};

// The fibers of the block being run: the first n of the worker's pool.
struct FiberSpan {
  Fiber* p = nullptr;
  unsigned n = 0;
  Fiber* begin() const { return p; }
  Fiber* end() const { return p + n; }
  size_t size() const { return n; }
  Fiber& operator[](size_t i) const { return p[i]; }
};

struct Region {
  const void* key;
  char* ptr;
};

// One per OS thread that runs blocks: the fibers, their stacks and the shared
// memory arena, all reused from block to block.
struct Worker {
  FiberContext scheduler;
  std::vector<Fiber> pool;  // grows to the largest block; stacks are kept
  FiberSpan fibers;
  std::vector<unsigned> order;
  size_t pos = 0;  // where in `order` the running fiber is
  Fiber* current = nullptr;
  BlockContext block;
  const Launch* launch = nullptr;
  const std::function<void()>* body = nullptr;
  std::string error;  // set by a checker; the block stops
  // Shared memory.
  char* arena = nullptr;
  size_t used = 0, shared_total = 0;
  char* dynamic = nullptr;
  std::vector<Region> regions;

  Worker() {
    arena = static_cast<char*>(std::aligned_alloc(64, kArenaBytes));
    TORCH_CHECK(arena != nullptr, "CUDA emulator: out of memory for the shared-memory arena");
  }
  ~Worker() {
    for (Fiber& f : pool) free_stack(f.stack);
    LENETALEX_EMU_UNPOISON(arena, kArenaBytes);
    std::free(arena);
  }
};

thread_local Worker* tl_worker = nullptr;

Worker& worker() {
  static thread_local Worker w;
  tl_worker = &w;
  return w;
}

std::string where(const Site& s) {
  std::ostringstream os;
  os << s.file << ":" << s.line << " (" << s.function << ")";
  return os.str();
}

std::string dims(dim3 d) {
  std::ostringstream os;
  os << "(" << d.x << ", " << d.y << ", " << d.z << ")";
  return os.str();
}

// "threads 0-31, 64" as linear thread indices of the block.
std::string thread_list(const std::vector<unsigned>& ids) {
  std::ostringstream os;
  os << (ids.size() == 1 ? "thread " : "threads ");
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (i) os << ", ";
    os << ids[i];
    if (j > i) os << "-" << ids[j];
    i = j + 1;
  }
  return os.str();
}

// The error that stops the block: names the launch, the block and the message.
void fail(Worker& w, const std::string& msg) {
  if (!w.error.empty()) return;
  std::ostringstream os;
  os << "CUDA emulator: kernel launched at " << w.launch->site.file << ":" << w.launch->site.line
     << " (grid " << dims(w.launch->grid) << ", block " << dims(w.launch->block) << "), block ("
     << w.block.block_idx.x << ", " << w.block.block_idx.y << ", " << w.block.block_idx.z
     << "): " << msg;
  w.error = os.str();
}

// From a fiber: stop here (its stack is dropped) and let the scheduler report.
[[noreturn]] void fail_in_fiber(Worker& w, const std::string& msg) {
  fail(w, msg);
  Fiber* f = w.current;
  f->state = State::Exited;
  switch_fiber(f->ctx, w.scheduler, true);
  std::abort();  // never resumed
}

// The running fiber stops (it waits, or has exited): the next ready one in
// this pass's order runs, straight from fiber to fiber (half the switches of
// going through the scheduler); after the last, the scheduler.
void yield(Worker& w, bool exiting = false) {
  Fiber* from = w.current;
  while (++w.pos < w.fibers.size()) {
    Fiber& next = w.fibers[w.order[w.pos]];
    if (next.state != State::Ready) continue;
    w.current = &next;
    tl_thread = &next.thread;
    switch_fiber(from->ctx, next.ctx, exiting);
    return;
  }
  switch_fiber(from->ctx, w.scheduler, exiting);
}

void fiber_entry() {
  Worker& w = *tl_worker;
  fiber_started(w.scheduler);
  try {
    (*w.body)();
  } catch (const std::exception& e) {
    fail(w, std::string("a thread threw: ") + e.what());
  }
  w.current->state = State::Exited;
  if (!w.error.empty()) switch_fiber(w.current->ctx, w.scheduler, true);
  yield(w, true);
  std::abort();  // never resumed
}

// --- warp operations ---------------------------------------------------------

// The lane whose value lane `lane` receives, or -1 for its own.
int source_lane(const Fiber& f, int lane) {
  const int width = f.width, base = lane / width * width, local = lane - base;
  switch (f.kind) {
    case ShuffleKind::Index:
      return base + ((f.arg % width) + width) % width;
    case ShuffleKind::Up:
      return local >= f.arg ? lane - f.arg : -1;
    case ShuffleKind::Down:
      return local + f.arg < width ? lane + f.arg : -1;
    case ShuffleKind::Xor: {
      const int src = lane ^ f.arg;
      return src / width == lane / width ? src : -1;
    }
  }
  return -1;
}

std::string hex_mask(unsigned mask) {
  std::ostringstream os;
  os << "0x" << std::hex << mask;
  return os.str();
}

bool same_op(const Fiber& a, const Fiber& b) {
  return a.site.line == b.site.line && a.site.file == b.site.file && a.mask == b.mask &&
         a.is_shuffle == b.is_shuffle;
}

// Why the warp operation of lane l (warp starting at thread base, `lanes`
// threads) cannot complete, or "" if it only waits for lanes still elsewhere.
std::string warp_misuse(const Worker& w, unsigned base, unsigned lanes, unsigned l) {
  const Fiber& f = w.fibers[base + l];
  const std::string op = f.is_shuffle ? "shuffle" : "__syncwarp";
  const std::string at = op + " at " + where(f.site) + " with mask " + hex_mask(f.mask);
  if (!(f.mask >> l & 1u))
    return at + ": thread " + std::to_string(base + l) + " is not in its own mask";
  std::vector<unsigned> absent, exited, elsewhere, waiting;
  for (unsigned m = 0; m < 32; ++m) {
    if (!(f.mask >> m & 1u)) continue;
    if (m >= lanes) {
      absent.push_back(base + m);
      continue;
    }
    const Fiber& o = w.fibers[base + m];
    if (o.state == State::Exited) exited.push_back(base + m);
    else if (o.state == State::Warp) (same_op(o, f) ? waiting : elsewhere).push_back(base + m);
  }
  if (!absent.empty())
    return at + ": its " + thread_list(absent) + " do not exist (the block has " +
           std::to_string(w.fibers.size()) + " threads)";
  if (!exited.empty()) return at + " names lanes that have exited: " + thread_list(exited);
  if (!elsewhere.empty()) {
    const Fiber& o = w.fibers[elsewhere[0]];
    return "divergent warp operation: " + thread_list(waiting) + " at " + where(f.site) +
           " with mask " + hex_mask(f.mask) + ", but " + thread_list(elsewhere) + " at " +
           where(o.site) + (o.mask != f.mask ? " with mask " + hex_mask(o.mask) : "");
  }
  return "";
}

// Completes the warp operations whose named lanes have all arrived at the same
// one. Returns whether any completed; reports misuse (a mask naming an exited
// or absent lane or a lane elsewhere, a source lane outside the mask).
bool release_warps(Worker& w) {
  const unsigned n = unsigned(w.fibers.size());
  bool released = false;
  for (unsigned base = 0; base < n; base += 32) {
    const unsigned lanes = std::min(32u, n - base);
    for (unsigned l = 0; l < lanes; ++l) {
      Fiber& f = w.fibers[base + l];
      if (f.state != State::Warp) continue;
      const unsigned mask = f.mask;
      bool complete = (mask >> l & 1u) && (lanes == 32 || (mask >> lanes) == 0);
      for (unsigned m = 0; complete && m < lanes; ++m)
        complete = !(mask >> m & 1u) || (w.fibers[base + m].state == State::Warp &&
                                         same_op(w.fibers[base + m], f));
      if (!complete) {
        const std::string why = warp_misuse(w, base, lanes, l);
        if (!why.empty()) {
          fail(w, why);
          return false;
        }
        continue;  // a named lane is still at a barrier: maybe a deadlock, seen later
      }
      for (unsigned m = 0; m < lanes; ++m) {
        if (!(mask >> m & 1u)) continue;
        Fiber& o = w.fibers[base + m];
        if (!o.is_shuffle) continue;
        const int src = source_lane(o, int(m));
        if (src >= 0 && !(mask >> src & 1u)) {
          fail(w, "shuffle at " + where(o.site) + ": thread " + std::to_string(base + m) +
                      " reads lane " + std::to_string(src) + ", which mask " + hex_mask(mask) +
                      " does not name");
          return false;
        }
        o.result = src < 0 ? o.value : w.fibers[base + unsigned(src)].value;
      }
      for (unsigned m = 0; m < lanes; ++m)
        if (mask >> m & 1u) w.fibers[base + m].state = State::Ready;
      released = true;
    }
  }
  return released;
}

// --- barriers and deadlocks ----------------------------------------------

// Called when no fiber is ready: releases __syncthreads if every live thread
// has reached the same one; otherwise reports what stops the block.
bool release_barrier(Worker& w) {
  // The common case, without allocating: every thread at the same barrier.
  const Fiber& f0 = w.fibers[0];
  bool all_here = true;
  for (const Fiber& f : w.fibers)
    all_here = all_here && f.state == State::Barrier && f.site.line == f0.site.line &&
               f.site.file == f0.site.file;
  if (all_here) {
    for (Fiber& f : w.fibers) f.state = State::Ready;
    return true;
  }
  std::vector<unsigned> at_barrier, exited, in_warp;
  for (const Fiber& f : w.fibers) {
    if (f.state == State::Barrier) at_barrier.push_back(f.linear);
    else if (f.state == State::Exited) exited.push_back(f.linear);
    else if (f.state == State::Warp) in_warp.push_back(f.linear);
  }
  if (at_barrier.empty() && in_warp.empty()) return false;  // all exited
  if (!in_warp.empty()) {
    const Fiber& f = w.fibers[in_warp[0]];
    std::string msg = "deadlock: " + thread_list(in_warp) + " wait in a warp operation (first at " +
                      where(f.site) + ")";
    if (!at_barrier.empty())
      msg += " while " + thread_list(at_barrier) + " wait at __syncthreads " +
             where(w.fibers[at_barrier[0]].site);
    fail(w, msg);
    return false;
  }
  const Fiber& first = w.fibers[at_barrier[0]];
  std::vector<unsigned> same, other;
  for (unsigned id : at_barrier) {
    const Fiber& f = w.fibers[id];
    (f.site.line == first.site.line && f.site.file == first.site.file ? same : other).push_back(id);
  }
  if (!other.empty()) {
    fail(w, "divergent __syncthreads: " + thread_list(same) + " at " + where(first.site) + ", " +
                thread_list(other) + " at " + where(w.fibers[other[0]].site));
    return false;
  }
  if (!exited.empty()) {
    fail(w, "__syncthreads at " + where(first.site) + " reached by " + thread_list(same) +
                " after " + thread_list(exited) + " exited");
    return false;
  }
  for (Fiber& f : w.fibers) f.state = State::Ready;
  return true;
}

// --- blocks -----------------------------------------------------------------

void start_shared(Worker& w) {
  LENETALEX_EMU_POISON(w.arena, kArenaBytes);
  w.regions.clear();
  w.used = 0;
  w.shared_total = w.launch->dynamic_smem;
  w.dynamic = nullptr;
  if (w.launch->dynamic_smem > 0) {
    w.dynamic = w.arena;
    LENETALEX_EMU_UNPOISON(w.dynamic, w.launch->dynamic_smem);
    std::memset(w.dynamic, 0xFF, w.launch->dynamic_smem);
    w.used = (w.launch->dynamic_smem + 15) / 16 * 16 + kSharedGap;
  }
}

void run_block(Worker& w, uint3 block_idx, Schedule schedule, uint64_t seed) {
  const dim3 bd = w.launch->block;
  const unsigned n = bd.x * bd.y * bd.z;
  w.block = {block_idx, bd, w.launch->grid};
  tl_block = &w.block;
  if (w.pool.size() < n) w.pool.resize(n);  // between blocks: no fiber is suspended
  w.fibers = {w.pool.data(), n};
  const size_t stack_size = fiber_stack_size();
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = w.fibers[i];
    if (f.stack.base == nullptr) f.stack = allocate_stack(stack_size);
    f.linear = i;
    f.thread.thread_idx = {i % bd.x, i / bd.x % bd.y, i / (bd.x * bd.y)};
    f.state = State::Ready;
    prepare_fiber(f.ctx, f.stack, &fiber_entry, i);
  }
  start_shared(w);

  std::vector<unsigned>& order = w.order;
  order.resize(n);
  for (unsigned i = 0; i < n; ++i) order[i] = schedule == Schedule::Reverse ? n - 1 - i : i;
  // Random: a fresh order at every pass, from the seed and the block index.
  std::mt19937_64 rng;
  if (schedule == Schedule::Random)
    rng.seed(seed ^ (uint64_t(block_idx.x) << 32 | block_idx.y) ^ (uint64_t(block_idx.z) << 48));
  for (;;) {
    if (schedule == Schedule::Random) std::shuffle(order.begin(), order.end(), rng);
    // One pass: the first ready fiber runs; each hands over to the next (yield).
    for (w.pos = 0; w.pos < n && w.fibers[order[w.pos]].state != State::Ready; ++w.pos) {
    }
    if (w.pos < n) {
      w.current = &w.fibers[order[w.pos]];
      tl_thread = &w.current->thread;
      switch_fiber(w.scheduler, w.current->ctx);
    }
    if (!w.error.empty()) break;
    if (release_warps(w) || !w.error.empty()) continue;
    if (!release_barrier(w)) break;
  }
  tl_thread = nullptr;
  w.current = nullptr;
}

// --- the pool of OS threads -------------------------------------------------

unsigned emu_threads() {
  static const unsigned n = [] {
    if (const char* v = std::getenv("LENETALEX_EMU_THREADS")) {
      const long t = std::atol(v);
      TORCH_CHECK_VALUE(t >= 1, "LENETALEX_EMU_THREADS must be a positive integer, got '", v, "'");
      return unsigned(t);
    }
    return std::max(1u, std::thread::hardware_concurrency());
  }();
  return n;
}

// Runs `job(worker index)` on `count` OS threads (the caller is one of them).
class Pool {
 public:
  void run(unsigned count, const std::function<void(unsigned)>& job) {
    std::unique_lock<std::mutex> lock(mu_);
    while (threads_.size() + 1 < count) {
      const unsigned index = unsigned(threads_.size()) + 1;
      threads_.emplace_back([this, index] { loop(index); });
      threads_.back().detach();  // lives as long as the process
    }
    job_ = &job;
    active_ = count;
    pending_ = count - 1;
    ++generation_;
    cv_.notify_all();
    lock.unlock();
    job(0);
    lock.lock();
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void loop(unsigned index) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (index >= active_) continue;
      const auto* job = job_;
      lock.unlock();
      (*job)(index);
      lock.lock();
      if (--pending_ == 0) done_.notify_all();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_, done_;
  std::vector<std::thread> threads_;
  const std::function<void(unsigned)>* job_ = nullptr;
  unsigned active_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
};

Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: its threads outlive static destruction
  return *p;
}

std::mutex g_launch_mu;  // one launch at a time (the pool is shared)

void check_config(const Launch& l) {
  auto at = [&] {
    return std::string(" (launch at ") + l.site.file + ":" + std::to_string(l.site.line) + ")";
  };
  TORCH_CHECK(l.grid.x >= 1 && l.grid.y >= 1 && l.grid.z >= 1 && l.block.x >= 1 &&
                  l.block.y >= 1 && l.block.z >= 1,
              "CUDA emulator: invalid configuration argument: grid ", dims(l.grid), ", block ",
              dims(l.block), " has a zero dimension", at());
  TORCH_CHECK(l.grid.x <= kMaxGridX && l.grid.y <= kMaxGridYZ && l.grid.z <= kMaxGridYZ,
              "CUDA emulator: grid ", dims(l.grid),
              " exceeds CUDA's limits (2^31 - 1, 65535, 65535)", at());
  const uint64_t threads = uint64_t(l.block.x) * l.block.y * l.block.z;
  TORCH_CHECK(l.block.x <= kMaxThreadsPerBlock && l.block.y <= kMaxThreadsPerBlock &&
                  l.block.z <= kMaxBlockZ && threads <= kMaxThreadsPerBlock,
              "CUDA emulator: block ", dims(l.block),
              " exceeds CUDA's limits (1024 threads, z <= 64)", at());
  TORCH_CHECK(l.max_threads == 0 || threads <= l.max_threads, "CUDA emulator: block ",
              dims(l.block), " has ", threads,
              " threads, more than the kernel's __launch_bounds__(", l.max_threads, ")", at());
  TORCH_CHECK(l.dynamic_smem <= kSharedLimit, "CUDA emulator: ", l.dynamic_smem,
              " bytes of dynamic shared memory exceed the 48 KiB a kernel gets without opt-in",
              at());
}

}  // namespace

// --- the device API -----------------------------------------------------------

void syncthreads(Site site) {
  Worker& w = *tl_worker;
  w.current->state = State::Barrier;
  w.current->site = site;
  yield(w);
}

void syncwarp(Site site, unsigned mask) {
  Worker& w = *tl_worker;
  Fiber& f = *w.current;
  f.state = State::Warp;
  f.site = site;
  f.is_shuffle = false;
  f.mask = mask;
  yield(w);
}

uint64_t shuffle(Site site, ShuffleKind kind, unsigned mask, uint64_t value, int arg, int width) {
  Worker& w = *tl_worker;
  Fiber& f = *w.current;
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    fail_in_fiber(w, "shuffle at " + where(site) + ": width " + std::to_string(width) +
                         " is not a power of 2 up to 32");
  f.state = State::Warp;
  f.site = site;
  f.is_shuffle = true;
  f.kind = kind;
  f.mask = mask;
  f.value = value;
  f.arg = arg;
  f.width = width;
  yield(w);
  return w.current->result;
}

void* static_shared(const void* key, size_t bytes, size_t align, Site site, const char* name) {
  Worker& w = *tl_worker;
  for (const Region& r : w.regions)
    if (r.key == key) return r.ptr;
  w.shared_total += bytes;
  if (w.shared_total > kSharedLimit || w.regions.size() >= kMaxSharedRegions)
    fail_in_fiber(w, std::string("__shared__ ") + name + " at " + where(site) +
                         " brings the block to " + std::to_string(w.shared_total) +
                         " bytes of shared memory, past the 48 KiB a kernel gets without opt-in");
  align = std::max<size_t>(align, 16);
  size_t offset = (w.used + align - 1) / align * align;
  char* p = w.arena + offset;
  LENETALEX_EMU_UNPOISON(p, bytes);
  std::memset(p, 0xFF, bytes);
  w.used = offset + bytes + kSharedGap;
  w.regions.push_back({key, p});
  return p;
}

void* dynamic_shared(Site /*site*/) {
  // Declaring the array without dynamic shared memory is fine (a kernel may
  // not use it on that launch, as LRN's global-ring fallback does); using it
  // then reads the arena's first bytes, poisoned under AddressSanitizer.
  Worker& w = *tl_worker;
  return w.dynamic != nullptr ? w.dynamic : w.arena;
}

void set_schedule(Schedule s, uint64_t seed) {
  g_schedule = int(s);
  g_seed = seed;
}

Schedule schedule(uint64_t* seed) {
  if (g_schedule.load() < 0) {
    Schedule s = Schedule::Forward;
    uint64_t sd = 0;
    if (const char* v = std::getenv("LENETALEX_EMU_SCHEDULE")) {
      const std::string str(v);
      if (str == "forward" || str.empty()) s = Schedule::Forward;
      else if (str == "reverse") s = Schedule::Reverse;
      else if (str.rfind("random", 0) == 0) {
        s = Schedule::Random;
        if (str.size() > 7 && str[6] == ':') sd = std::strtoull(str.c_str() + 7, nullptr, 10);
      } else {
        TORCH_CHECK_VALUE(false, "LENETALEX_EMU_SCHEDULE must be forward, reverse, random or "
                          "random:SEED, got '", str, "'");
      }
    }
    set_schedule(s, sd);
  }
  if (seed) *seed = g_seed.load();
  return Schedule(g_schedule.load());
}

void run_grid(const Launch& launch, const std::function<void()>& thread_body) {
  check_config(launch);
  uint64_t seed = 0;
  const Schedule sched = schedule(&seed);
  const uint64_t blocks = uint64_t(launch.grid.x) * launch.grid.y * launch.grid.z;
  std::lock_guard<std::mutex> guard(g_launch_mu);
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex err_mu;
  std::string error;
  auto report = [&](const std::string& msg) {
    std::lock_guard<std::mutex> lock(err_mu);
    if (error.empty()) error = msg;
    failed = true;
  };
  const std::function<void(unsigned)> job = [&](unsigned) {
    try {
      Worker& w = worker();
      w.launch = &launch;
      w.body = &thread_body;
      for (uint64_t b; !failed && (b = next++) < blocks;) {
        const uint3 idx{unsigned(b % launch.grid.x), unsigned(b / launch.grid.x % launch.grid.y),
                        unsigned(b / (uint64_t(launch.grid.x) * launch.grid.y))};
        w.error.clear();
        run_block(w, idx, sched, seed);
        if (!w.error.empty()) report(w.error);
      }
    } catch (const std::exception& e) {  // e.g. no memory for a stack: reported, not fatal
      report(std::string("CUDA emulator: ") + e.what());
    }
    tl_block = nullptr;
  };
  const unsigned threads = unsigned(std::min<uint64_t>(emu_threads(), blocks));
  if (threads <= 1) job(0);
  else pool().run(threads, job);
  TORCH_CHECK(error.empty(), error);
}

}  // namespace cuda_emu
