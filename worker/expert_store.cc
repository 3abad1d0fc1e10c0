#include "worker/expert_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/checkpoint.h"

namespace eplb {

void SyntheticCheckpoint(int layer, int64_t checkpoint_id, uint8_t* out, int64_t row_bytes) {
  uint64_t x = (static_cast<uint64_t>(layer) << 32) ^ static_cast<uint64_t>(checkpoint_id + 1);
  for (int64_t i = 0; i < row_bytes; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<uint8_t>(x);
  }
}

uint64_t RowFingerprint(const uint8_t* row, int64_t row_bytes) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t i = 0; i < row_bytes; ++i) {
    h ^= row[i];
    h *= 1099511628211ull;
  }
  return h;
}

HostExpertStore::HostExpertStore(const ExpertLayout& layout, int num_layers, int rank,
                                 std::vector<TensorSpec> tensors)
    : layout_(layout), num_layers_(num_layers), rank_(rank), tensors_(std::move(tensors)) {
  for (const TensorSpec& t : tensors_) row_bytes_ += t.bytes;
  data_.assign(static_cast<size_t>(num_layers_) * rows_per_layer() * row_bytes_, 0);
  base_ = data_.data();
  writes_.assign(static_cast<size_t>(num_layers_) * rows_per_layer(), 0);
}

HostExpertStore::~HostExpertStore() {
  if (mapped_bytes_ > 0) munmap(base_, mapped_bytes_);
}

absl::StatusOr<std::unique_ptr<HostExpertStore>> HostExpertStore::CreateShared(
    const ExpertLayout& layout, int num_layers, int rank, std::vector<TensorSpec> tensors,
    const std::string& path) {
  auto store = std::make_unique<HostExpertStore>(layout, num_layers, rank, std::move(tensors));
  const size_t bytes = store->data_.size();
  const int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("cannot create ", path));
  const bool sized = ftruncate(fd, static_cast<off_t>(bytes)) == 0;
  void* p = sized ? mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
  close(fd);
  if (p == MAP_FAILED) return absl::UnavailableError(absl::StrCat("cannot map ", path));
  store->data_.clear();
  store->data_.shrink_to_fit();
  store->base_ = static_cast<uint8_t*>(p);
  store->mapped_bytes_ = bytes;
  return store;
}

absl::StatusOr<std::unique_ptr<HostExpertStore>> HostExpertStore::OpenPeer(
    const ExpertLayout& layout, int num_layers, int rank, std::vector<TensorSpec> tensors,
    const std::string& path) {
  auto store = std::make_unique<HostExpertStore>(layout, num_layers, rank, std::move(tensors));
  const size_t bytes = store->data_.size();
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("peer rank ", rank, ": no ", path));
  struct stat st;
  const bool ok = fstat(fd, &st) == 0 && static_cast<size_t>(st.st_size) == bytes;
  void* p = ok ? mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
  close(fd);
  if (p == MAP_FAILED) {
    return absl::FailedPreconditionError(
        absl::StrCat("peer rank ", rank, ": ", path, " is not a store of this shape"));
  }
  store->data_.clear();
  store->data_.shrink_to_fit();
  store->base_ = static_cast<uint8_t*>(p);
  store->mapped_bytes_ = bytes;
  return store;
}

void HostExpertStore::WriteRow(int layer, int row, const uint8_t* src) {
  std::memcpy(Row(layer, row), src, row_bytes_);
  ++writes_[layer * rows_per_layer() + row];
}

absl::Status HostExpertStore::LoadCheckpoint(const PlacementMap& map,
                                             const CheckpointReader& read) {
  if (map.num_layers() != num_layers_) {
    return absl::InvalidArgumentError(
        absl::StrCat("map has ", map.num_layers(), " layers; the store ", num_layers_));
  }
  std::vector<uint8_t> buf(row_bytes_);
  for (int layer = 0; layer < num_layers_; ++layer) {
    for (int64_t x = 0; x < layout_.num_logical() + layout_.num_shared(); ++x) {
      auto targets = CheckpointTargets(layout_, &map, layer, x);
      if (!targets.ok()) return targets.status();
      bool read_once = false;
      for (const CheckpointTarget& t : *targets) {
        if (t.rank != rank_) continue;
        if (!read_once) {
          read(layer, x, buf.data(), row_bytes_);
          read_once = true;
        }
        WriteRow(layer, t.local_row, buf.data());
      }
    }
  }
  return absl::OkStatus();
}

std::vector<int> HostExpertStore::MismatchedRows(int layer, const PlacementMap& map,
                                                 const CheckpointReader& read) const {
  std::vector<int> bad;
  std::vector<uint8_t> want(row_bytes_);
  for (int row = 0; row < rows_per_layer(); ++row) {
    read(layer, CheckpointIdOfRow(layout_, map, layer, rank_, row), want.data(), row_bytes_);
    if (RowFingerprint(want.data(), row_bytes_) != Fingerprint(layer, row)) bad.push_back(row);
  }
  return bad;
}

}  // namespace eplb
