// Distinct types for the three expert id spaces of spec/DOMAIN.md section 1.
//
//   LogicalId  e in [0, E): what the router picks and the checkpoint names.
//   PhysicalId p in [0, P): a routed replica; owner rank p / L, local row p % L.
//   SlotId     s in [0, W * (L + S)): a row of the per-rank-slot all-to-all space.
//
// They do not convert into each other implicitly: the only conversions are the layout's
// (ExpertLayout::SlotOf) and the placement map's (PlacementMap::LogicalOf). That is what makes
// "a slot computed from the logical count" a type error instead of a silent wrong output.
//
//   PhysicalId p(100);
//   SlotId s = layout.SlotOf(p);   // 105 at E=256, R=32, W=16, S=1
//   int64_t raw = s.value();       // leave the type system only at the edges (I/O, kernels)
#ifndef EPLB_CORE_IDS_H_
#define EPLB_CORE_IDS_H_

#include <cstdint>
#include <functional>
#include <ostream>
#include <utility>

namespace eplb {

template <typename Tag>
class TypedId {
 public:
  constexpr TypedId() : value_(-1) {}
  constexpr explicit TypedId(int64_t value) : value_(value) {}

  constexpr int64_t value() const { return value_; }
  // Negative ids are padding (a token slot with no expert).
  constexpr bool valid() const { return value_ >= 0; }

  friend constexpr bool operator==(TypedId a, TypedId b) { return a.value_ == b.value_; }
  friend constexpr bool operator!=(TypedId a, TypedId b) { return a.value_ != b.value_; }
  friend constexpr bool operator<(TypedId a, TypedId b) { return a.value_ < b.value_; }
  friend constexpr bool operator<=(TypedId a, TypedId b) { return a.value_ <= b.value_; }
  friend constexpr bool operator>(TypedId a, TypedId b) { return a.value_ > b.value_; }
  friend constexpr bool operator>=(TypedId a, TypedId b) { return a.value_ >= b.value_; }
  friend std::ostream& operator<<(std::ostream& os, TypedId id) {
    return os << Tag::kPrefix << id.value_;
  }
  template <typename H>
  friend H AbslHashValue(H h, TypedId id) {
    return H::combine(std::move(h), id.value_);
  }

 private:
  int64_t value_;
};

struct LogicalTag {
  static constexpr const char* kPrefix = "logical:";
};
struct PhysicalTag {
  static constexpr const char* kPrefix = "physical:";
};
struct SlotTag {
  static constexpr const char* kPrefix = "slot:";
};

using LogicalId = TypedId<LogicalTag>;
using PhysicalId = TypedId<PhysicalTag>;
using SlotId = TypedId<SlotTag>;

inline constexpr LogicalId kNoLogical{-1};
inline constexpr PhysicalId kNoPhysical{-1};
inline constexpr SlotId kNoSlot{-1};

}  // namespace eplb

#endif  // EPLB_CORE_IDS_H_
