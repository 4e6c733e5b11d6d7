#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/huge_pages.h"
#include "engine/model.h"

namespace spindle {
namespace {

constexpr DLDataType kF32{kDLFloat, 32, 1};
constexpr DLDataType kU8{kDLUInt, 8, 1};

ffi::Tensor Filled(const std::vector<int64_t>& shape, DLDataType dtype, uint8_t seed) {
  ffi::Tensor t = NewCPUTensor(shape, dtype);
  auto* p = static_cast<uint8_t*>(t.data_ptr());
  for (size_t i = 0; i < ffi::GetDataSize(t); ++i) p[i] = static_cast<uint8_t>(seed + 7 * i);
  return t;
}

uintptr_t Address(const ffi::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()); }

TEST(PackInHugePages, CopiesEveryTensorIntoOneAlignedBlockInOrder) {
  // Sizes that are not multiples of 64 bytes and a total over one 2 MB page.
  ffi::Array<ffi::Tensor> in{Filled({3, 5}, kF32, 1), Filled({1}, kU8, 2), Filled({600, 1000}, kF32, 3),
                             Filled({577}, kU8, 4)};
  PackedWeights out = PackInHugePages(in);
  ASSERT_EQ(out.tensors.size(), in.size());
  const uintptr_t base = Address(out.tensors[0]);
  EXPECT_EQ(base % (uintptr_t(2) << 20), 0u);
  int64_t expected_bytes = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const ffi::Tensor& a = in[i];
    const ffi::Tensor& b = out.tensors[i];
    EXPECT_NE(a.data_ptr(), b.data_ptr());
    EXPECT_EQ(Address(b) % 64, 0u);
    EXPECT_EQ(Address(b) - base, static_cast<uintptr_t>(expected_bytes)) << "tensor " << i;
    expected_bytes += (ffi::GetDataSize(a) + 63) / 64 * 64;
    EXPECT_EQ(std::vector<int64_t>(a.shape().begin(), a.shape().end()),
              std::vector<int64_t>(b.shape().begin(), b.shape().end()));
    EXPECT_EQ(a.dtype(), b.dtype());
    EXPECT_EQ(std::memcmp(a.data_ptr(), b.data_ptr(), ffi::GetDataSize(a)), 0) << "tensor " << i;
  }
  EXPECT_EQ(out.block_bytes, expected_bytes);
  EXPECT_GE(out.huge_page_bytes, 0);
  EXPECT_LE(out.huge_page_bytes, out.block_bytes);
}

TEST(PackInHugePages, TheBlockLivesAsLongAsAnyTensorInIt) {
  ffi::Tensor last;
  {
    ffi::Array<ffi::Tensor> in{Filled({1024}, kF32, 9), Filled({4096}, kU8, 5)};
    PackedWeights out = PackInHugePages(in);
    last = out.tensors[1];
  }
  // The array, the first tensor and the inputs are gone; the block is still mapped (unmapped, this would fault).
  auto* p = static_cast<const uint8_t*>(last.data_ptr());
  for (size_t i = 0; i < 4096; ++i) ASSERT_EQ(p[i], static_cast<uint8_t>(5 + 7 * i));
}

struct HostAsDevice {  // host memory labelled as a GPU's: only the device field matters here
  void AllocData(DLTensor* t) { t->data = std::malloc(ffi::GetDataSize(*t)); }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

TEST(PackInHugePages, TensorsOnAnotherDeviceAreReturnedAsTheyAre) {
  std::vector<int64_t> shape{16};
  ffi::Tensor gpu = ffi::Tensor::FromNDAlloc(HostAsDevice(), ffi::ShapeView(shape.data(), shape.size()), kF32,
                                             DLDevice{kDLCUDA, 0});
  ffi::Array<ffi::Tensor> in{Filled({16}, kF32, 1), gpu};
  PackedWeights out = PackInHugePages(in);
  EXPECT_EQ(out.block_bytes, 0);
  ASSERT_EQ(out.tensors.size(), 2u);
  EXPECT_EQ(out.tensors[0].data_ptr(), in[0].data_ptr());
  EXPECT_EQ(out.tensors[1].data_ptr(), gpu.data_ptr());
}

TEST(PackInHugePages, AnEmptyListIsReturnedAsItIs) {
  PackedWeights out = PackInHugePages(ffi::Array<ffi::Tensor>{});
  EXPECT_EQ(out.tensors.size(), 0u);
  EXPECT_EQ(out.block_bytes, 0);
  EXPECT_EQ(out.huge_page_bytes, 0);
}

}  // namespace
}  // namespace spindle
