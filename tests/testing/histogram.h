// A latency histogram for benchmarks: log-linear buckets of nanoseconds,
// exact below 128 ns, then 64 buckets per power of two (about 1.5%
// resolution). Constant memory whatever the run length; header-only.
//
// Thread-safety: one owner; merge per-thread histograms afterwards.
#ifndef VOXDB_TESTS_TESTING_HISTOGRAM_H_
#define VOXDB_TESTS_TESTING_HISTOGRAM_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace voxdb::testing {

class Histogram {
 public:
  Histogram() : buckets_(kBuckets, 0) {}

  void Add(uint64_t ns) {
    ++buckets_[Index(ns)];
    ++count_;
    max_ = std::max(max_, ns);
  }
  void Merge(const Histogram& o) {
    for (size_t i = 0; i < kBuckets; ++i) buckets_[i] += o.buckets_[i];
    count_ += o.count_;
    max_ = std::max(max_, o.max_);
  }
  uint64_t count() const { return count_; }
  // The largest value added, exactly, in microseconds; 0 when empty.
  double MaxUs() const { return static_cast<double>(max_) / 1000.0; }
  // The p-quantile (0 < p <= 1) in microseconds; 0 when empty.
  double QuantileUs(double p) const {
    if (count_ == 0) return 0;
    const uint64_t rank =
        std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(p * static_cast<double>(count_))));
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += buckets_[i];
      if (seen >= rank) return static_cast<double>(Middle(i)) / 1000.0;
    }
    return static_cast<double>(Middle(kBuckets - 1)) / 1000.0;
  }

 private:
  static constexpr int kSubBits = 6;  // 64 buckets per power of two
  static constexpr size_t kBuckets = (size_t{64 - kSubBits} + 1) << kSubBits;

  static size_t Index(uint64_t v) {
    if (v < (uint64_t{2} << kSubBits)) return static_cast<size_t>(v);
    const int e = 63 - __builtin_clzll(v);  // >= kSubBits + 1
    const uint64_t sub = (v >> (e - kSubBits)) & ((uint64_t{1} << kSubBits) - 1);
    return (static_cast<size_t>(e - kSubBits) << kSubBits) + static_cast<size_t>(sub) +
           (size_t{1} << kSubBits);
  }
  static uint64_t Middle(size_t i) {
    if (i < (size_t{2} << kSubBits)) return i;
    const int e = static_cast<int>(i >> kSubBits) + kSubBits - 1;
    const uint64_t sub = i & ((size_t{1} << kSubBits) - 1);
    const uint64_t lo = ((uint64_t{1} << kSubBits) + sub) << (e - kSubBits);
    return lo + ((uint64_t{1} << (e - kSubBits)) >> 1);
  }

  std::vector<uint64_t> buckets_;
  uint64_t count_ = 0;
  uint64_t max_ = 0;
};

}  // namespace voxdb::testing

#endif  // VOXDB_TESTS_TESTING_HISTOGRAM_H_
