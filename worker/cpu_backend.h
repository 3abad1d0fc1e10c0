// The CPU weight backend: each rank's expert rows in host memory (HostExpertStore), peers
// reached through a CpuFabric: the workers of one process, and with a shared directory the
// workers of other processes on the machine (tests, the simulator, the CPU end-to-end harness).
// Moves go through a CpuMover; staging is local, so this backend is not collective.
#ifndef EPLB_WORKER_CPU_BACKEND_H_
#define EPLB_WORKER_CPU_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "core/expert_layout.h"
#include "worker/cpu_mover.h"
#include "worker/expert_store.h"
#include "worker/weight_backend.h"

namespace eplb {

// The stores of every rank in this process, by rank (what NCCL peers are on GPUs). Row data of
// all stores is read and written under data_mutex(): staging reads peers' live rows, commits and
// checkpoint loads write them (the rollout protocol already orders them; the lock makes that
// visible, e.g. to ThreadSanitizer, and safe if a caller breaks the protocol).
class CpuFabric {
 public:
  explicit CpuFabric(int ep_size) : stores_(ep_size, nullptr), alive_(ep_size, true) {}
  Mutex* data_mutex() { return &data_mu_; }

  // Cross-process mode: local stores live in files `dir/rank-<r>` and the ranks of other
  // processes are reached by mapping their files (see HostExpertStore::CreateShared).
  void SetSharedDirectory(std::string dir) {
    MutexLock l(&mu_);
    dir_ = std::move(dir);
  }
  std::string shared_directory() {
    MutexLock l(&mu_);
    return dir_;
  }
  void Attach(int rank, HostExpertStore* store) {
    MutexLock l(&mu_);
    stores_[rank] = store;
  }
  void SetAlive(int rank, bool alive) {
    MutexLock l(&mu_);
    alive_[rank] = alive;
  }
  // Every rank's store: local ones, and in cross-process mode the peers' mapped files (shaped
  // like `like`; ranks whose file does not exist yet stay null).
  std::vector<HostExpertStore*> stores(const HostExpertStore* like = nullptr);
  std::vector<bool> alive(const HostExpertStore* like = nullptr);

 private:
  Mutex mu_;
  Mutex data_mu_;
  std::string dir_ ABSL_GUARDED_BY(mu_);
  std::vector<HostExpertStore*> stores_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<HostExpertStore>> peers_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> alive_ ABSL_GUARDED_BY(mu_);
};

class CpuWeightBackend : public WeightBackend {
 public:
  // Stores for `ranks`, attached to `fabric` (in shared files when it has a directory).
  static absl::StatusOr<std::unique_ptr<CpuWeightBackend>> Create(
      const ExpertLayout& layout, int num_layers, std::vector<int> ranks,
      std::vector<TensorSpec> tensors, CheckpointReader checkpoint, CpuFabric* fabric);

  int64_t row_bytes() const override { return stores_.front()->row_bytes(); }
  bool collective() const override { return false; }
  absl::Status Load(const PlacementMap& map) override;
  absl::Status Stage(const MovePlan& plan, const PlacementMap& next,
                     const std::vector<int>& dead) override;
  absl::StatusOr<int64_t> Commit() override;
  void Abort() override { mover_.reset(); }
  int64_t staged_bytes_received() const override {
    return mover_ == nullptr ? 0 : mover_->bytes_received();
  }
  std::vector<std::string> Inconsistencies(const PlacementMap& map) override;

 private:
  CpuWeightBackend(const ExpertLayout& layout, int num_layers, std::vector<int> ranks,
                   CheckpointReader checkpoint, CpuFabric* fabric)
      : layout_(layout),
        num_layers_(num_layers),
        ranks_(std::move(ranks)),
        checkpoint_(std::move(checkpoint)),
        fabric_(fabric) {}

  ExpertLayout layout_;
  int num_layers_;
  std::vector<int> ranks_;
  CheckpointReader checkpoint_;
  CpuFabric* fabric_;
  std::vector<std::unique_ptr<HostExpertStore>> stores_;  // per own rank
  std::unique_ptr<CpuMover> mover_;
};

}  // namespace eplb

#endif  // EPLB_WORKER_CPU_BACKEND_H_
