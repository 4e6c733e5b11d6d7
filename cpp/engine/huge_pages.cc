#include "huge_pages.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace spindle {

namespace {

constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kAlign = 64;

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

/*! \brief One mapping, unmapped when the last tensor in it goes. */
class Block {
 public:
  static std::shared_ptr<Block> Map(size_t bytes) {
#if defined(__linux__)
    size_t size = RoundUp(bytes, kHugePage);
    // Over-map by one huge page, then trim both ends so that the block starts on a 2 MB boundary.
    void* raw = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    uintptr_t start = reinterpret_cast<uintptr_t>(raw), aligned = RoundUp(start, kHugePage);
    if (aligned > start) munmap(raw, aligned - start);
    size_t tail = start + size + kHugePage - (aligned + size);
    if (tail > 0) munmap(reinterpret_cast<void*>(aligned + size), tail);
    void* base = reinterpret_cast<void*>(aligned);
#if defined(MADV_HUGEPAGE)
    madvise(base, size, MADV_HUGEPAGE);  // refused (THP off): ordinary pages, nothing else changes
#endif
    return std::shared_ptr<Block>(new Block(base, size));
#else
    void* base = std::aligned_alloc(kAlign, RoundUp(bytes, kAlign));
    return base == nullptr ? nullptr : std::shared_ptr<Block>(new Block(base, 0));
#endif
  }

  ~Block() {
#if defined(__linux__)
    munmap(base_, size_);
#else
    std::free(base_);
#endif
  }

  char* base() const { return static_cast<char*>(base_); }

 private:
  Block(void* base, size_t size) : base_(base), size_(size) {}
  void* base_;
  size_t size_;
};

/*! \brief tvm-ffi allocator placing a tensor at a fixed address inside a Block that it keeps alive. */
struct BlockSlot {
  std::shared_ptr<Block> block;
  char* data;
  void AllocData(DLTensor* t) { t->data = data; }
  void FreeData(DLTensor*) {}
};

/*! \brief AnonHugePages of the mapping that starts at `base`, in bytes (0 where it cannot be read). */
int64_t HugePageBytes(const void* base) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t start = 0, end = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> start >> dash >> end && dash == '-') {
      inside = start <= reinterpret_cast<uintptr_t>(base) && reinterpret_cast<uintptr_t>(base) < end;
      continue;
    }
    if (inside && line.rfind("AnonHugePages:", 0) == 0) {
      std::istringstream value(line.substr(14));
      int64_t kb = 0;
      value >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

}  // namespace

PackedWeights PackInHugePages(const ffi::Array<ffi::Tensor>& tensors) {
  PackedWeights out;
  out.tensors = tensors;
  std::vector<size_t> offsets;
  size_t total = 0;
  for (const ffi::Tensor& t : tensors) {
    if (t.device().device_type != kDLCPU || !t.IsContiguous()) return out;
    offsets.push_back(total);
    total = RoundUp(total + ffi::GetDataSize(t), kAlign);
  }
  if (total == 0) return out;
  std::shared_ptr<Block> block = Block::Map(total);
  if (!block) return out;
  ffi::Array<ffi::Tensor> packed;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const ffi::Tensor& t = tensors[i];
    char* dst = block->base() + offsets[i];
    std::memcpy(dst, static_cast<const char*>(t.data_ptr()) + t.GetDLTensorPtr()->byte_offset, ffi::GetDataSize(t));
    packed.push_back(ffi::Tensor::FromNDAlloc(BlockSlot{block, dst}, t.shape(), t.dtype(), t.device()));
  }
  out.tensors = packed;
  out.block_bytes = static_cast<int64_t>(total);
  out.huge_page_bytes = std::min<int64_t>(HugePageBytes(block->base()), out.block_bytes);
  return out;
}

PackedWeights PackWeights(const ffi::Array<ffi::Tensor>& tensors) {
  const char* setting = std::getenv("SPINDLE_HUGE_PAGES");
  if (setting != nullptr && std::strcmp(setting, "0") == 0) {
    PackedWeights out;
    out.tensors = tensors;
    return out;
  }
  return PackInHugePages(tensors);
}

}  // namespace spindle
