// Controller: the EPLB control plane's core object (the gRPC classes are thin layers over it).
//
// It keeps the committed placement and its version, the registered workers, the aggregated load,
// and the policy; it decides when a new placement is worth rolling out, computes it with the
// placement engine, and rolls it out in two phases:
//
//   PREPARE(version, nonce, changed layers) -> every live worker stages weights, ACK or NACK
//   COMMIT(version, nonce, switch_step)     -> every worker switches at that step, ACK
//   any NACK, timeout or lost worker        -> ABORT to everyone; the version is not committed
//
// Versions only grow; answers with a stale version or nonce are ignored. A committed placement is
// persisted (write, fsync, rename) before it is announced as committed, so a restarted
// controller serves the same map and version.
//
//   Controller::Options o;  o.layout = {...};  o.state_dir = "/var/lib/eplb";
//   EPLB_ASSIGN_OR_RETURN(std::unique_ptr<Controller> c, Controller::Create(o, registry));
//   c->Step();   // one policy evaluation (tests); main runs it on an interval
//
// Thread-safe. Rollouts block the calling thread (Step or TriggerRebalance) until they end;
// worker answers arrive on other threads through OnAnswer.
#ifndef EPLB_EPLB_CONTROLLER_CONTROLLER_H_
#define EPLB_EPLB_CONTROLLER_CONTROLLER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "core/expert_layout.h"
#include "core/placement_map.h"
#include "eplb_controller/load_aggregator.h"
#include "prometheus/registry.h"
#include "proto/eplb.pb.h"

namespace eplb {

// Where the controller sends one worker's placement updates (the gRPC stream, or a test fake).
class UpdateSink {
 public:
  virtual ~UpdateSink() = default;
  // False when the worker is gone. May block while the worker does not read.
  virtual bool Send(const v1::PlacementUpdate& update) = 0;
  // Ends the stream, so that a blocked Send returns (false). Safe from any thread.
  virtual void Cancel() {}
};

struct ControllerPolicy {
  double trigger_balancedness = 0.95;   // consider rebalancing below this observed balancedness
  double min_balancedness_gain = 0.02;  // and only if the plan gains at least this much
  double hysteresis = 0.01;             // after a rebalance, require trigger - hysteresis
  absl::Duration min_interval = absl::Seconds(30);
  int64_t max_moves = -1;  // per rebalance; < 0 unlimited
  // At most this many changed layers per version (a rebalance becomes several rollouts, each
  // staged at one step boundary): bounds workers' staging memory and stall. 0: all at once.
  int layers_per_rollout = 0;
  std::string algorithm = "incremental";
  bool paused = false;
};

struct RebalanceRecord {
  uint64_t version = 0;
  std::string result;  // committed, aborted, skipped
  std::string reason;
  absl::Time time;
  double balancedness_before = 0;
  double predicted_balancedness = 0;
  int64_t experts_moved = 0;
  double bytes_moved = 0;
  double plan_seconds = 0;
};

class Controller {
 public:
  struct Options {
    LayoutConfig layout;
    int num_layers = 1;
    int num_groups = 1;
    int64_t bytes_per_expert = 0;
    std::string state_dir;  // empty: nothing persisted
    AggregationOptions aggregation;
    ControllerPolicy policy;
    absl::Duration rollout_timeout = absl::Seconds(30);
    absl::Duration report_interval = absl::Seconds(1);
    std::function<absl::Time()> now = [] { return absl::Now(); };
  };

  static absl::StatusOr<std::unique_ptr<Controller>> Create(
      Options options, std::shared_ptr<prometheus::Registry> registry);
  // What Create checks of the options (the layout, the layer count), without starting anything.
  static absl::Status ValidateOptions(const Options& options);
  ~Controller();

  // Worker API (through the gRPC service).
  absl::StatusOr<v1::RegisterResponse> Register(const v1::RegisterRequest& request);
  absl::Status ReportLoad(const v1::LoadReport& report);
  // Attaches the update stream of a registered worker; Detach on stream end (marks it gone).
  absl::Status Attach(const std::string& worker_id, const std::string& session_id,
                      std::shared_ptr<UpdateSink> sink);
  void Detach(const std::string& worker_id, const UpdateSink* sink);
  void OnAnswer(const v1::PlacementAnswer& answer);

  // Policy: evaluates once and rolls out if worth it. Returns what happened.
  RebalanceRecord Step();
  // Operator: plan and roll out now (force: even if the policy says it is not worth it).
  RebalanceRecord TriggerRebalance(const std::string& reason, bool force);

  void SetPolicy(const ControllerPolicy& policy);
  ControllerPolicy policy() const;
  absl::Status SetRankDead(int rank, bool dead);

  v1::GetStatusResponse Status() const;
  v1::Placement CurrentPlacement() const;
  uint64_t version() const;
  std::shared_ptr<const PlacementMap> map() const;
  const ExpertLayout& layout() const { return layout_; }

 private:
  struct Worker {
    std::vector<int> ranks;
    int node = 0;
    std::string session_id;
    bool dead = false;
    uint64_t applied_version = 0;
    absl::Time last_report;
    std::shared_ptr<UpdateSink> sink;
  };
  struct Rollout {
    uint64_t version = 0;
    std::string nonce;
    v1::PlacementUpdate::Phase phase = v1::PlacementUpdate::PHASE_UNSPECIFIED;
    std::set<std::string> waiting;
    std::string failure;  // first NACK or loss
  };
  struct Metrics;

  Controller(Options options, ExpertLayout layout, std::shared_ptr<prometheus::Registry> registry);
  absl::Status LoadState();
  absl::Status SaveState() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  RebalanceRecord Rebalance(const std::string& reason, bool force) ABSL_LOCKS_EXCLUDED(mu_);
  // PREPARE (the given layers of `next`, based on `base`), then COMMIT or ABORT; true: committed.
  // `base_map` is the map of version `base` (the sparse form of the update is relative to it).
  bool RolloutVersion(const PlacementMap* base_map, const PlacementMap& next,
                      const std::vector<int>& layers, uint64_t base, uint64_t version,
                      const std::vector<int>& dead) ABSL_LOCKS_EXCLUDED(mu_);
  // Sends one phase to every live worker and waits for all answers; false on NACK/timeout/loss.
  bool RunPhase(const v1::PlacementUpdate& update) ABSL_LOCKS_EXCLUDED(mu_);
  double ObservedBalancedness(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<int> DeadRanks() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Record(const RebalanceRecord& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateGauges() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const ExpertLayout layout_;
  std::shared_ptr<prometheus::Registry> registry_;  // owns the families metrics_ points into
  std::unique_ptr<Metrics> metrics_;
  Mutex rollout_mu_;  // one rollout at a time; taken before mu_
  mutable Mutex mu_;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 1;
  std::shared_ptr<const PlacementMap> map_ ABSL_GUARDED_BY(mu_);
  std::set<int> dead_ranks_ ABSL_GUARDED_BY(mu_);
  ControllerPolicy policy_ ABSL_GUARDED_BY(mu_);
  LoadAggregator aggregator_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Worker> workers_ ABSL_GUARDED_BY(mu_);
  Rollout rollout_ ABSL_GUARDED_BY(mu_);
  bool rollout_active_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_rebalance_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::vector<RebalanceRecord> recent_ ABSL_GUARDED_BY(mu_);  // rollouts: committed, aborted
  std::optional<RebalanceRecord> last_skip_ ABSL_GUARDED_BY(mu_);
  absl::Time balancedness_updated_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  double predicted_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_session_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace eplb

#endif  // EPLB_EPLB_CONTROLLER_CONTROLLER_H_
