#include "eplb_controller/eplbctl.h"

#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "core/checkpoint.h"
#include "core/dispatch.h"
#include "core/expert_layout.h"
#include "core/formats.h"
#include "core/move_plan.h"
#include "core/placement_map.h"
#include "core/topk_postprocess.h"
#include "core/waterfill.h"
#include "eplb_controller/placement/placement.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "proto/eplb.grpc.pb.h"

namespace eplb {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kUsage[] =
    "usage: eplbctl <layout|route|plan|diff|status|placement|trigger|pause|resume|policy|rank|help>"
    " [flags]\n"
    "  layout --num-logical E --num-redundant R --ep-size W --num-shared S [--num-nodes N]\n"
    "         [--placement FILE --layer L]\n"
    "  route  --placement FILE --layer L --rank R --ep-size W --num-shared S --topk ID,...\n"
    "         [--num-nodes N] [--num-logical E] [--dispatch static|dynamic]\n"
    "         [--waterfill sglang|exact] [--row I] [--batch-size N] [--batch-routed-load C,...]\n"
    "         [--routed-scaling-factor F]\n"
    "  plan   --load LOAD.json --num-physical P --ep-size W [--num-nodes N] [--num-groups G]\n"
    "         [--algorithm deepseek|balanced|incremental] [--current PLACEMENT.json]\n"
    "         [--dead-ranks 3,7] [--max-moves M] [--target-balancedness B]\n"
    "         [--node-locality auto|keep|relax] [--forbid-duplicates] [--bytes-per-expert B]\n"
    "         [--out FILE]\n"
    "  diff   --from OLD.json --to NEW.json --ep-size W [--num-nodes N]\n"
    "         [--bytes-per-expert B] [--dead-ranks 3,7]\n"
    "  status --controller HOST:PORT [--json] [--timeout SECONDS]\n"
    "Operator commands on a live controller (all take --controller HOST:PORT [--timeout S]):\n"
    "  placement [--out FILE]     the committed map, as SGLang's physical_to_logical_map JSON\n"
    "  trigger [--reason TEXT] [--force]   plan and roll out now (force: even if not worth it)\n"
    "  pause | resume             stop or restart automatic rebalancing\n"
    "  policy [--algorithm A] [--trigger-balancedness B] [--min-gain G] [--hysteresis H]\n"
    "         [--min-interval-ms M] [--max-moves M] [--layers-per-rollout N]\n"
    "                             change the named policy fields, print the policy\n"
    "  rank --rank R (--dead | --alive)   exclude a rank from plans, or bring it back\n";

// --name value / --name=value flags, checked against what the subcommand accepts.
class Flags {
 public:
  static absl::StatusOr<Flags> Parse(const std::vector<std::string>& args, size_t first,
                                     const std::set<std::string>& valued,
                                     const std::set<std::string>& boolean) {
    Flags f;
    for (size_t i = first; i < args.size(); ++i) {
      const std::string& a = args[i];
      if (a.rfind("--", 0) != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("unexpected argument \"", a, "\"; expected --flag value"));
      }
      std::string name = a.substr(2);
      std::string value;
      bool has_value = false;
      if (size_t eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
      if (boolean.count(name)) {
        f.values_[name] = has_value ? value : "true";
        continue;
      }
      if (!valued.count(name)) {
        return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
      }
      if (!has_value) {
        if (i + 1 >= args.size()) {
          return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
        }
        value = args[++i];
      }
      f.values_[name] = value;
    }
    return f;
  }

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  bool Bool(const std::string& name) const {
    auto it = values_.find(name);
    return it != values_.end() && it->second != "false" && it->second != "0";
  }
  absl::StatusOr<std::string> Str(const std::string& name) const {
    auto it = values_.find(name);
    if (it == values_.end()) return absl::InvalidArgumentError(absl::StrCat("missing --", name));
    return it->second;
  }
  absl::StatusOr<int> Int(const std::string& name, absl::optional<int> def = absl::nullopt) const {
    auto it = values_.find(name);
    if (it == values_.end()) {
      if (def) return *def;
      return absl::InvalidArgumentError(absl::StrCat("missing --", name));
    }
    int v = 0;
    if (!absl::SimpleAtoi(it->second, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, "=", it->second, " is not an integer"));
    }
    return v;
  }
  absl::StatusOr<double> Double(const std::string& name, double def) const {
    auto it = values_.find(name);
    if (it == values_.end()) return def;
    double v = 0;
    if (!absl::SimpleAtod(it->second, &v) || !(v == v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, "=", it->second, " is not a number"));
    }
    return v;
  }
  absl::StatusOr<std::vector<int64_t>> IntList(const std::string& name) const {
    std::vector<int64_t> out;
    auto it = values_.find(name);
    if (it == values_.end()) return out;
    for (absl::string_view part : absl::StrSplit(it->second, ',', absl::SkipWhitespace())) {
      int64_t v = 0;
      if (!absl::SimpleAtoi(part, &v)) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, ": \"", part,
                                                       "\" is not an integer; expected a "
                                                       "comma-separated list like 3,7"));
      }
      out.push_back(v);
    }
    return out;
  }

 private:
  std::map<std::string, std::string> values_;
};

absl::StatusOr<PlacementMap> LoadPlacement(const std::string& path, int num_logical) {
  EPLB_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  auto rows = ParsePlacementJson(text);
  if (!rows.ok())
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", rows.status().message()));
  int max_id = -1;
  for (const auto& row : *rows) {
    for (int32_t e : row) max_id = std::max(max_id, e);
  }
  const int e_count = num_logical > 0 ? num_logical : max_id + 1;
  const int p_count = static_cast<int>((*rows)[0].size());
  auto map = PlacementMap::Create(e_count, p_count, *std::move(rows));
  if (!map.ok())
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", map.status().message()));
  return map;
}

absl::Status CheckLayer(int layer, const PlacementMap& map) {
  if (layer < 0 || layer >= map.num_layers()) {
    return absl::InvalidArgumentError(absl::StrCat("--layer ", layer,
                                                   " is out of range; the "
                                                   "placement has layers [0, ",
                                                   map.num_layers(), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Json> Layout(const Flags& f) {
  LayoutConfig c;
  EPLB_ASSIGN_OR_RETURN(c.num_logical, f.Int("num-logical"));
  EPLB_ASSIGN_OR_RETURN(c.num_redundant, f.Int("num-redundant"));
  EPLB_ASSIGN_OR_RETURN(c.ep_size, f.Int("ep-size"));
  EPLB_ASSIGN_OR_RETURN(c.num_shared, f.Int("num-shared"));
  EPLB_ASSIGN_OR_RETURN(c.num_nodes, f.Int("num-nodes", 1));
  EPLB_ASSIGN_OR_RETURN(ExpertLayout layout, ExpertLayout::Create(c));
  absl::optional<PlacementMap> map;
  int layer = 0;
  if (f.Has("placement")) {
    EPLB_ASSIGN_OR_RETURN(std::string path, f.Str("placement"));
    EPLB_ASSIGN_OR_RETURN(map, LoadPlacement(path, c.num_logical));
    if (map->num_physical() != layout.num_physical()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " has ", map->num_physical(),
                       " physical slots per layer; the layout has P=", layout.num_physical()));
    }
    EPLB_ASSIGN_OR_RETURN(layer, f.Int("layer", 0));
    EPLB_RETURN_IF_ERROR(CheckLayer(layer, *map));
  } else if (f.Has("layer")) {
    return absl::InvalidArgumentError("--layer needs --placement");
  }
  Json j;
  j["num_logical"] = layout.num_logical();
  j["num_redundant"] = layout.num_redundant();
  j["num_physical"] = layout.num_physical();
  j["ep_size"] = layout.ep_size();
  j["num_shared"] = layout.num_shared();
  j["num_nodes"] = layout.num_nodes();
  j["routed_slots_per_rank"] = layout.routed_slots_per_rank();
  j["slots_per_rank"] = layout.slots_per_rank();
  j["num_slots"] = layout.num_slots();
  std::vector<int64_t> routed;
  for (int p = 0; p < layout.num_physical(); ++p)
    routed.push_back(layout.SlotOf(PhysicalId(p)).value());
  j["routed_slot_of_physical"] = routed;
  Json shared = Json::array();
  for (int r = 0; r < layout.ep_size(); ++r) {
    std::vector<int64_t> s;
    for (int i = 0; i < layout.num_shared(); ++i) s.push_back(layout.SharedSlot(r, i).value());
    shared.push_back(s);
  }
  j["shared_slot_of_rank"] = shared;
  Json ckpt = Json::object();
  const int first = map ? 0 : layout.num_logical();
  for (int x = first; x < layout.num_logical() + layout.num_shared(); ++x) {
    EPLB_ASSIGN_OR_RETURN(std::vector<CheckpointTarget> t,
                          CheckpointTargets(layout, map ? &*map : nullptr, layer, x));
    std::vector<int64_t> slots;
    for (const auto& target : t) slots.push_back(target.slot.value());
    ckpt[std::to_string(x)] = slots;
  }
  j["checkpoint_slots"] = ckpt;
  if (map) j["layer"] = layer;
  return j;
}

absl::StatusOr<Json> Route(const Flags& f) {
  EPLB_ASSIGN_OR_RETURN(std::string path, f.Str("placement"));
  EPLB_ASSIGN_OR_RETURN(int num_logical, f.Int("num-logical", 0));
  EPLB_ASSIGN_OR_RETURN(PlacementMap map, LoadPlacement(path, num_logical));
  LayoutConfig c;
  c.num_logical = map.num_logical();
  EPLB_ASSIGN_OR_RETURN(c.ep_size, f.Int("ep-size"));
  EPLB_ASSIGN_OR_RETURN(c.num_shared, f.Int("num-shared"));
  EPLB_ASSIGN_OR_RETURN(c.num_nodes, f.Int("num-nodes", 1));
  c.num_redundant = map.num_physical() - map.num_logical();
  EPLB_ASSIGN_OR_RETURN(ExpertLayout layout, ExpertLayout::Create(c));
  TopkOptions o;
  EPLB_ASSIGN_OR_RETURN(o.layer, f.Int("layer"));
  EPLB_RETURN_IF_ERROR(CheckLayer(o.layer, map));
  EPLB_ASSIGN_OR_RETURN(o.rank, f.Int("rank"));
  if (o.rank < 0 || o.rank >= layout.ep_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--rank ", o.rank, " is out of range [0, ", layout.ep_size(), ")"));
  }
  EPLB_ASSIGN_OR_RETURN(std::vector<int64_t> topk, f.IntList("topk"));
  if (topk.empty()) return absl::InvalidArgumentError("missing --topk (logical ids, e.g. 3,17)");
  for (int64_t e : topk) {
    if (e >= layout.num_logical()) {
      return absl::InvalidArgumentError(absl::StrCat("--topk id ", e,
                                                     " is out of range; expected [0, ",
                                                     layout.num_logical(), ") or -1 for padding"));
    }
  }
  const std::string dispatch = f.Has("dispatch") ? *f.Str("dispatch") : "static";
  if (dispatch != "static" && dispatch != "dynamic") {
    return absl::InvalidArgumentError(
        absl::StrCat("--dispatch ", dispatch, " is unknown; expected static or dynamic"));
  }
  o.dispatch = dispatch == "static" ? DispatchMode::kStatic : DispatchMode::kDynamic;
  const std::string wf = f.Has("waterfill") ? *f.Str("waterfill") : "sglang";
  if (wf != "sglang" && wf != "exact") {
    return absl::InvalidArgumentError(
        absl::StrCat("--waterfill ", wf, " is unknown; expected sglang or exact"));
  }
  o.waterfill = wf == "sglang" ? WaterfillPolicy::kSglang : WaterfillPolicy::kExact;
  EPLB_ASSIGN_OR_RETURN(o.routed_scaling_factor, f.Double("routed-scaling-factor", 1.0));
  EPLB_ASSIGN_OR_RETURN(int row, f.Int("row", 0));
  EPLB_ASSIGN_OR_RETURN(int batch, f.Int("batch-size", 1));
  EPLB_ASSIGN_OR_RETURN(std::vector<int64_t> batch_load, f.IntList("batch-routed-load"));
  if (row < 0 || batch < 1 || row >= std::max(batch, row + 1)) {
    return absl::InvalidArgumentError(absl::StrCat("--row ", row, " and --batch-size ", batch,
                                                   " must satisfy 0 <= row and batch >= 1"));
  }
  if (!batch_load.empty() && static_cast<int>(batch_load.size()) != layout.ep_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--batch-routed-load has ", batch_load.size(),
                     " entries; expected one per rank (W=", layout.ep_size(), ")"));
  }
  o.top_k = static_cast<int>(topk.size());
  EPLB_ASSIGN_OR_RETURN(StaticDispatch tables, StaticDispatch::Build(layout, map));
  std::vector<int64_t> physical;
  for (int k = 0; k < o.top_k; ++k) {
    physical.push_back(
        DispatchOne(map, tables, o, row, k, LogicalId(topk[k] < 0 ? -1 : topk[k])).value());
  }
  // Waterfill: the plan is the batch's routed load per rank (this token alone if not given).
  std::vector<int64_t> load =
      batch_load.empty() ? CountRoutedPerRank(layout, physical) : batch_load;
  for (int64_t v : load) {
    if (v < 0) return absl::InvalidArgumentError("--batch-routed-load values must be >= 0");
  }
  const WaterfillPlan plan = StaticPlan(load, o.top_k);
  // A batch of `row + 1` copies of the token: the pick depends on (row, loads) only.
  std::vector<int64_t> fake;
  for (int t = 0; t <= row; ++t) fake.insert(fake.end(), physical.begin(), physical.end());
  const int min_batch = batch < kWaterfillMinBatch ? row + 2 : 0;
  // Exact levelling assigns quotas over a whole batch, which one token does not describe, so the
  // per-token explanation is SGLang's pick for either policy.
  int32_t shared_rank = -1;
  if (layout.num_shared() > 0) {
    shared_rank = AssignSharedRanks(layout, fake, o.top_k, o.rank, plan, WaterfillPolicy::kSglang,
                                    min_batch)[row];
  }
  std::vector<int64_t> slots;
  std::vector<float> weights;
  RemapToSlots(layout, physical, o.top_k, {shared_rank}, {}, SharedExpertWeight(o), slots, weights);
  Json j;
  j["layout"] = layout.DebugString();
  j["layer"] = o.layer;
  j["rank"] = o.rank;
  j["row"] = row;
  j["dispatch"] = dispatch;
  j["logical"] = topk;
  j["physical"] = physical;
  Json owners = Json::array();
  for (int64_t p : physical) owners.push_back(p >= 0 ? layout.OwnerRank(PhysicalId(p)) : -1);
  j["physical_owner_rank"] = owners;
  std::vector<int64_t> accounting;
  for (int64_t p : physical) {
    if (p >= 0) accounting.push_back(p);
  }
  j["load_accounting_ids"] = accounting;
  j["slots"] = slots;
  j["weights"] = weights;
  Json w;
  w["policy"] = wf;
  w["batch_size"] = batch;
  w["rank_load"] = plan.rank_load;
  w["level"] = plan.level;
  w["headroom"] = Headroom(plan, o.rank);
  w["shared_rank"] = shared_rank;
  w["shared_slot"] = shared_rank >= 0 ? layout.SharedSlot(shared_rank).value() : -1;
  w["reason"] = layout.num_shared() == 0     ? "no fused shared expert (S=0)"
                : accounting.empty()         ? "no valid routed id: no shared expert"
                : batch < kWaterfillMinBatch ? "batch under 64 tokens: shared expert stays local"
                                             : "waterfill pick by headroom and row hash";
  j["waterfill"] = w;
  return j;
}

absl::StatusOr<Json> PlanCmd(const Flags& f) {
  EPLB_ASSIGN_OR_RETURN(std::string load_path, f.Str("load"));
  EPLB_ASSIGN_OR_RETURN(std::string text, ReadFileToString(load_path));
  auto load = ParseLoadJson(text);
  if (!load.ok())
    return absl::InvalidArgumentError(absl::StrCat(load_path, ": ", load.status().message()));
  placement::Problem pr;
  pr.load = &*load;
  EPLB_ASSIGN_OR_RETURN(pr.num_physical, f.Int("num-physical"));
  EPLB_ASSIGN_OR_RETURN(pr.ep_size, f.Int("ep-size"));
  EPLB_ASSIGN_OR_RETURN(pr.num_nodes, f.Int("num-nodes", 1));
  EPLB_ASSIGN_OR_RETURN(pr.num_groups, f.Int("num-groups", 1));
  EPLB_ASSIGN_OR_RETURN(std::vector<int64_t> dead, f.IntList("dead-ranks"));
  pr.dead_ranks.assign(dead.begin(), dead.end());
  placement::Options o;
  if (f.Has("algorithm")) {
    EPLB_ASSIGN_OR_RETURN(std::string name, f.Str("algorithm"));
    EPLB_ASSIGN_OR_RETURN(o.algorithm, placement::ParseAlgorithm(name));
  }
  if (f.Has("node-locality")) {
    const std::string v = *f.Str("node-locality");
    if (v == "auto") {
      o.locality = placement::NodeLocality::kAuto;
    } else if (v == "keep") {
      o.locality = placement::NodeLocality::kKeep;
    } else if (v == "relax") {
      o.locality = placement::NodeLocality::kRelax;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--node-locality ", v, " is unknown; expected auto, keep or relax"));
    }
  }
  o.forbid_duplicate_on_gpu = f.Bool("forbid-duplicates");
  EPLB_ASSIGN_OR_RETURN(int max_moves, f.Int("max-moves", -1));
  o.max_moves = max_moves;
  EPLB_ASSIGN_OR_RETURN(o.target_balancedness, f.Double("target-balancedness", 0));
  EPLB_ASSIGN_OR_RETURN(o.bytes_per_expert, f.Double("bytes-per-expert", 0));
  if (o.target_balancedness > 1 || o.bytes_per_expert < 0) {
    return absl::InvalidArgumentError(
        "--target-balancedness must be <= 1 and --bytes-per-expert >= 0");
  }
  absl::optional<PlacementMap> current;
  if (f.Has("current")) {
    EPLB_ASSIGN_OR_RETURN(std::string path, f.Str("current"));
    EPLB_ASSIGN_OR_RETURN(current, LoadPlacement(path, static_cast<int>((*load)[0].size())));
    o.current = &*current;
  }
  const absl::Time start = absl::Now();
  auto plan = placement::ComputePlan(pr, o);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (!plan.ok()) return plan.status();
  Json j;
  j["physical_to_logical_map"] = plan->physical_to_logical;
  j["logical_to_all_physical_map"] = plan->logical_to_all_physical.Nested();
  j["replica_count"] = plan->replica_count;
  Json st;
  st["algorithm"] = placement::AlgorithmName(o.algorithm);
  st["balancedness"] = plan->stats.balancedness;
  std::vector<double> max_load, bound, bal;
  for (const auto& l : plan->stats.layers) {
    max_load.push_back(l.max_gpu_load);
    bound.push_back(l.lower_bound);
    bal.push_back(l.balancedness);
  }
  st["max_gpu_load"] = max_load;
  st["lower_bound"] = bound;
  st["balancedness_per_layer"] = bal;
  st["experts_moved"] = plan->stats.experts_moved;
  st["bytes_moved"] = plan->stats.bytes_moved;
  st["target_met"] = plan->stats.target_met;
  st["dead_ranks"] = plan->dead_ranks;
  st["compute_seconds"] = seconds;
  j["stats"] = st;
  return j;
}

// `eplbctl diff`: the move plan between two placements, for operators to read before a rollout.
absl::StatusOr<Json> DiffCmd(const Flags& f) {
  EPLB_ASSIGN_OR_RETURN(std::string from_path, f.Str("from"));
  EPLB_ASSIGN_OR_RETURN(std::string to_path, f.Str("to"));
  EPLB_ASSIGN_OR_RETURN(int num_logical, f.Int("num-logical", 0));
  EPLB_ASSIGN_OR_RETURN(PlacementMap from, LoadPlacement(from_path, num_logical));
  EPLB_ASSIGN_OR_RETURN(PlacementMap to, LoadPlacement(to_path, from.num_logical()));
  LayoutConfig c;
  c.num_logical = from.num_logical();
  c.num_redundant = from.num_physical() - from.num_logical();
  EPLB_ASSIGN_OR_RETURN(c.ep_size, f.Int("ep-size"));
  EPLB_ASSIGN_OR_RETURN(c.num_nodes, f.Int("num-nodes", 1));
  EPLB_ASSIGN_OR_RETURN(ExpertLayout layout, ExpertLayout::Create(c));
  EPLB_ASSIGN_OR_RETURN(double bytes_per_expert, f.Double("bytes-per-expert", 0));
  if (bytes_per_expert < 0) return absl::InvalidArgumentError("--bytes-per-expert must be >= 0");
  if (to.num_physical() != from.num_physical() || to.num_layers() != from.num_layers()) {
    return absl::InvalidArgumentError(absl::StrCat(
        to_path, " has shape [", to.num_layers(), "][", to.num_physical(), "]; expected [",
        from.num_layers(), "][", from.num_physical(), "] like ", from_path));
  }
  EPLB_ASSIGN_OR_RETURN(std::vector<int64_t> dead, f.IntList("dead-ranks"));
  EPLB_ASSIGN_OR_RETURN(
      MovePlan plan, BuildMovePlan(layout, from, to, std::vector<int>(dead.begin(), dead.end())));
  Json transfers = Json::array();
  for (const Transfer& t : plan.transfers) {
    transfers.push_back({{"layer", t.layer},
                         {"dst_rank", t.dst_rank},
                         {"dst_row", t.dst_row},
                         {"expert", t.expert},
                         {"kind", t.kind == TransferKind::kPeer ? "peer" : "local"},
                         {"after_transfer", t.kind == TransferKind::kAfterPeer},
                         {"src_rank", t.src_rank},
                         {"src_row", t.src_row}});
  }
  Json j;
  j["transfers"] = transfers;
  j["rows_changed"] = plan.rows_changed;
  j["peer_transfers"] = plan.peer_transfers;
  j["local_copies"] = plan.local_copies;
  j["bytes"] = static_cast<double>(plan.peer_transfers) * bytes_per_expert;
  return j;
}

// Writes `j` to `path` atomically (a temporary file, then rename); false if that failed.
bool WriteJsonFile(const std::string& path, const Json& j) {
  const std::string tmp = path + ".tmp";
  std::ofstream file(tmp);
  file << j.dump() << "\n";
  file.close();
  return file && std::rename(tmp.c_str(), path.c_str()) == 0;
}

// A stub and a call deadline for the commands that talk to a live controller.
struct Admin {
  std::string addr;
  std::unique_ptr<v1::EplbAdminService::Stub> stub;
  double timeout_s = 5;
  void Deadline(grpc::ClientContext& ctx) const {
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  }
  absl::Status Failed(const grpc::Status& rpc) const {
    if (rpc.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
      return absl::InvalidArgumentError(rpc.error_message());
    }
    return absl::UnavailableError(
        absl::StrCat("controller ", addr, " did not answer: ", rpc.error_message()));
  }
};

absl::StatusOr<Admin> Connect(const Flags& f) {
  Admin a;
  EPLB_ASSIGN_OR_RETURN(a.addr, f.Str("controller"));
  EPLB_ASSIGN_OR_RETURN(a.timeout_s, f.Double("timeout", 5.0));
  a.stub = v1::EplbAdminService::NewStub(
      grpc::CreateChannel(a.addr, grpc::InsecureChannelCredentials()));
  return a;
}

// `eplbctl status`: the live controller's view, as JSON (the caller prints text or JSON).
absl::StatusOr<Json> StatusCmd(const Flags& f) {
  EPLB_ASSIGN_OR_RETURN(Admin a, Connect(f));
  grpc::ClientContext ctx;
  a.Deadline(ctx);
  v1::GetStatusResponse s;
  if (grpc::Status rpc = a.stub->GetStatus(&ctx, v1::GetStatusRequest(), &s); !rpc.ok()) {
    return a.Failed(rpc);
  }
  Json j;
  j["controller"] = a.addr;
  j["version"] = s.version();
  j["layout"] = absl::StrCat("E=", s.layout().num_logical(), " R=", s.layout().num_redundant(),
                             " W=", s.layout().ep_size(), " S=", s.layout().num_shared(),
                             " layers=", s.layout().num_layers());
  j["balancedness"] = s.balancedness();
  j["predicted_balancedness"] = s.predicted_balancedness();
  j["balancedness_per_layer"] =
      std::vector<double>(s.balancedness_per_layer().begin(), s.balancedness_per_layer().end());
  j["rollout_in_progress"] = s.rollout_in_progress();
  // Nested [layers][W] and [layers][E] for tools (the demo's report draws them).
  const int layers = s.layout().num_layers();
  Json gpu = Json::array(), replicas = Json::array();
  for (int l = 0; l < layers && s.layout().ep_size() > 0; ++l) {
    const int w = s.layout().ep_size();
    if (s.gpu_load_size() >= (l + 1) * w) {
      gpu.push_back(
          std::vector<double>(s.gpu_load().begin() + l * w, s.gpu_load().begin() + (l + 1) * w));
    }
    const int e = s.layout().num_logical();
    if (s.replica_count_size() >= (l + 1) * e) {
      replicas.push_back(std::vector<int>(s.replica_count().begin() + l * e,
                                          s.replica_count().begin() + (l + 1) * e));
    }
  }
  j["gpu_load"] = gpu;
  j["replica_count"] = replicas;
  j["dead_ranks"] = std::vector<int>(s.dead_ranks().begin(), s.dead_ranks().end());
  Json workers = Json::array();
  for (const auto& w : s.workers()) {
    workers.push_back({{"worker_id", w.worker_id()},
                       {"ranks", std::vector<int>(w.ranks().begin(), w.ranks().end())},
                       {"node", w.node()},
                       {"state", w.state()},
                       {"applied_version", w.applied_version()}});
  }
  j["workers"] = workers;
  Json recent = Json::array();
  for (const auto& r : s.recent()) {
    recent.push_back({{"version", r.version()},
                      {"result", r.result()},
                      {"reason", r.reason()},
                      {"balancedness_before", r.balancedness_before()},
                      {"predicted_balancedness", r.predicted_balancedness()},
                      {"experts_moved", r.experts_moved()},
                      {"plan_seconds", r.plan_seconds()}});
  }
  j["recent_rebalances"] = recent;
  j["policy"] = {{"algorithm", s.policy().algorithm()},
                 {"trigger_balancedness", s.policy().trigger_balancedness()},
                 {"min_balancedness_gain", s.policy().min_balancedness_gain()},
                 {"layers_per_rollout", s.policy().layers_per_rollout_step()},
                 {"max_moves", s.policy().max_moves_per_rebalance()},
                 {"paused", s.policy().paused()}};
  return j;
}

Json PolicyJson(const v1::Policy& p) {
  return {{"algorithm", p.algorithm()},
          {"trigger_balancedness", p.trigger_balancedness()},
          {"min_balancedness_gain", p.min_balancedness_gain()},
          {"hysteresis", p.hysteresis()},
          {"min_interval_ms", p.min_interval_ms()},
          {"max_moves", p.max_moves_per_rebalance()},
          {"layers_per_rollout", p.layers_per_rollout_step()},
          {"paused", p.paused()}};
}

absl::StatusOr<Json> PlacementCmd(const Flags& f) {
  EPLB_ASSIGN_OR_RETURN(Admin a, Connect(f));
  grpc::ClientContext ctx;
  a.Deadline(ctx);
  v1::Placement p;
  if (grpc::Status rpc = a.stub->GetPlacement(&ctx, v1::GetPlacementRequest(), &p); !rpc.ok()) {
    return a.Failed(rpc);
  }
  std::vector<std::vector<int32_t>> rows(p.layers_size());
  for (const v1::LayerMap& lm : p.layers()) {
    if (lm.layer() >= 0 && lm.layer() < p.layers_size()) {
      rows[lm.layer()].assign(lm.physical_to_logical().begin(), lm.physical_to_logical().end());
    }
  }
  Json j;
  j["version"] = p.version();
  j["physical_to_logical_map"] = rows;
  j["dead_ranks"] = std::vector<int>(p.dead_ranks().begin(), p.dead_ranks().end());
  return j;
}

absl::StatusOr<Json> TriggerCmd(const Flags& f) {
  EPLB_ASSIGN_OR_RETURN(Admin a, Connect(f));
  v1::TriggerRebalanceRequest req;
  if (f.Has("reason")) req.set_reason(*f.Str("reason"));
  req.set_force(f.Bool("force"));
  grpc::ClientContext ctx;
  a.Deadline(ctx);
  v1::TriggerRebalanceResponse resp;
  if (grpc::Status rpc = a.stub->TriggerRebalance(&ctx, req, &resp); !rpc.ok()) {
    return a.Failed(rpc);
  }
  return Json{{"version", resp.version()}, {"result", resp.result()}};
}

// Reads the policy, applies `change`, writes it back; prints the resulting policy.
absl::StatusOr<Json> ChangePolicy(const Flags& f,
                                  const std::function<absl::Status(v1::Policy&)>& change) {
  EPLB_ASSIGN_OR_RETURN(Admin a, Connect(f));
  v1::GetStatusResponse st;
  {
    grpc::ClientContext ctx;
    a.Deadline(ctx);
    if (grpc::Status rpc = a.stub->GetStatus(&ctx, v1::GetStatusRequest(), &st); !rpc.ok()) {
      return a.Failed(rpc);
    }
  }
  v1::SetPolicyRequest req;
  *req.mutable_policy() = st.policy();
  if (absl::Status s = change(*req.mutable_policy()); !s.ok()) return s;
  grpc::ClientContext ctx;
  a.Deadline(ctx);
  v1::Policy out;
  if (grpc::Status rpc = a.stub->SetPolicy(&ctx, req, &out); !rpc.ok()) return a.Failed(rpc);
  return PolicyJson(out);
}

absl::StatusOr<Json> PolicyCmd(const Flags& f) {
  return ChangePolicy(f, [&](v1::Policy& p) -> absl::Status {
    if (f.Has("algorithm")) p.set_algorithm(*f.Str("algorithm"));
    if (f.Has("trigger-balancedness")) {
      EPLB_ASSIGN_OR_RETURN(double v, f.Double("trigger-balancedness", 0));
      p.set_trigger_balancedness(v);
    }
    if (f.Has("min-gain")) {
      EPLB_ASSIGN_OR_RETURN(double v, f.Double("min-gain", 0));
      p.set_min_balancedness_gain(v);
    }
    if (f.Has("hysteresis")) {
      EPLB_ASSIGN_OR_RETURN(double v, f.Double("hysteresis", 0));
      p.set_hysteresis(v);
    }
    if (f.Has("min-interval-ms")) {
      EPLB_ASSIGN_OR_RETURN(int v, f.Int("min-interval-ms"));
      p.set_min_interval_ms(v);
    }
    if (f.Has("max-moves")) {
      EPLB_ASSIGN_OR_RETURN(int v, f.Int("max-moves"));
      p.set_max_moves_per_rebalance(v);
    }
    if (f.Has("layers-per-rollout")) {
      EPLB_ASSIGN_OR_RETURN(int v, f.Int("layers-per-rollout"));
      p.set_layers_per_rollout_step(v);
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<Json> RankCmd(const Flags& f) {
  EPLB_ASSIGN_OR_RETURN(Admin a, Connect(f));
  EPLB_ASSIGN_OR_RETURN(int rank, f.Int("rank"));
  if (f.Bool("dead") == f.Bool("alive")) {
    return absl::InvalidArgumentError("rank needs exactly one of --dead and --alive");
  }
  v1::SetRankStateRequest req;
  req.set_rank(rank);
  req.set_dead(f.Bool("dead"));
  grpc::ClientContext ctx;
  a.Deadline(ctx);
  v1::Empty empty;
  if (grpc::Status rpc = a.stub->SetRankState(&ctx, req, &empty); !rpc.ok()) {
    return a.Failed(rpc);
  }
  return Json{{"rank", rank}, {"dead", f.Bool("dead")}};
}

std::string StatusText(const Json& j) {
  std::ostringstream o;
  o << "controller " << j["controller"].get<std::string>() << "  version "
    << j["version"].get<uint64_t>() << "  " << j["layout"].get<std::string>()
    << (j["rollout_in_progress"].get<bool>() ? "  (rollout in progress)" : "") << "\n";
  o << absl::StrFormat("balancedness %.4f observed, %.4f predicted by the last plan\n",
                       j["balancedness"].get<double>(), j["predicted_balancedness"].get<double>());
  o << "per layer:";
  for (double b : j["balancedness_per_layer"]) o << absl::StrFormat(" %.3f", b);
  o << "\nworkers (" << j["workers"].size() << "):\n";
  for (const auto& w : j["workers"]) {
    o << "  " << w["worker_id"].get<std::string>() << "  ranks " << w["ranks"].dump() << "  node "
      << w["node"].get<int>() << "  " << w["state"].get<std::string>() << "  applied v"
      << w["applied_version"].get<uint64_t>() << "\n";
  }
  o << "last rebalances:\n";
  for (const auto& r : j["recent_rebalances"]) {
    o << absl::StrFormat("  v%d %s (%s): %.4f -> %.4f, %d moved\n", r["version"].get<uint64_t>(),
                         r["result"].get<std::string>(), r["reason"].get<std::string>(),
                         r["balancedness_before"].get<double>(),
                         r["predicted_balancedness"].get<double>(),
                         r["experts_moved"].get<int64_t>());
  }
  o << "policy: " << j["policy"].dump() << "\n";
  return o.str();
}

}  // namespace

int RunEplbctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (args.empty() || args[0] == "help" || args[0] == "--help" || args[0] == "-h") {
    (args.empty() ? err : out) << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string& cmd = args[0];
  absl::StatusOr<Json> result;
  if (cmd == "layout") {
    auto f = Flags::Parse(args, 1,
                          {"num-logical", "num-redundant", "ep-size", "num-shared", "num-nodes",
                           "placement", "layer"},
                          {});
    result = f.ok() ? Layout(*f) : absl::StatusOr<Json>(f.status());
  } else if (cmd == "route") {
    auto f = Flags::Parse(args, 1,
                          {"placement", "layer", "rank", "ep-size", "num-shared", "num-nodes",
                           "num-logical", "topk", "dispatch", "waterfill", "row", "batch-size",
                           "batch-routed-load", "routed-scaling-factor"},
                          {});
    result = f.ok() ? Route(*f) : absl::StatusOr<Json>(f.status());
  } else if (cmd == "diff") {
    auto f = Flags::Parse(
        args, 1,
        {"from", "to", "ep-size", "num-nodes", "num-logical", "bytes-per-expert", "dead-ranks"},
        {});
    result = f.ok() ? DiffCmd(*f) : absl::StatusOr<Json>(f.status());
  } else if (cmd == "status") {
    auto f = Flags::Parse(args, 1, {"controller", "timeout"}, {"json"});
    result = f.ok() ? StatusCmd(*f) : absl::StatusOr<Json>(f.status());
    if (result.ok() && !f->Bool("json")) {
      out << StatusText(*result);
      return 0;
    }
  } else if (cmd == "plan") {
    auto f = Flags::Parse(args, 1,
                          {"load", "num-physical", "ep-size", "num-nodes", "num-groups",
                           "algorithm", "current", "dead-ranks", "max-moves", "target-balancedness",
                           "node-locality", "bytes-per-expert", "out"},
                          {"forbid-duplicates"});
    result = f.ok() ? PlanCmd(*f) : absl::StatusOr<Json>(f.status());
    if (result.ok() && f->Has("out")) {
      if (!WriteJsonFile(*f->Str("out"), *result)) {
        err << "eplbctl plan: cannot write " << *f->Str("out") << "\n";
        return 1;
      }
      return 0;
    }
  } else if (cmd == "placement") {
    auto f = Flags::Parse(args, 1, {"controller", "timeout", "out"}, {});
    result = f.ok() ? PlacementCmd(*f) : absl::StatusOr<Json>(f.status());
    if (result.ok() && f->Has("out")) {
      if (!WriteJsonFile(*f->Str("out"), *result)) {
        err << "eplbctl placement: cannot write " << *f->Str("out") << "\n";
        return 1;
      }
      return 0;
    }
  } else if (cmd == "trigger") {
    auto f = Flags::Parse(args, 1, {"controller", "timeout", "reason"}, {"force"});
    result = f.ok() ? TriggerCmd(*f) : absl::StatusOr<Json>(f.status());
  } else if (cmd == "pause" || cmd == "resume") {
    auto f = Flags::Parse(args, 1, {"controller", "timeout"}, {});
    const bool pause = cmd == "pause";
    result = f.ok() ? ChangePolicy(*f,
                                   [pause](v1::Policy& p) {
                                     p.set_paused(pause);
                                     return absl::OkStatus();
                                   })
                    : absl::StatusOr<Json>(f.status());
  } else if (cmd == "policy") {
    auto f = Flags::Parse(args, 1,
                          {"controller", "timeout", "algorithm", "trigger-balancedness", "min-gain",
                           "hysteresis", "min-interval-ms", "max-moves", "layers-per-rollout"},
                          {});
    result = f.ok() ? PolicyCmd(*f) : absl::StatusOr<Json>(f.status());
  } else if (cmd == "rank") {
    auto f = Flags::Parse(args, 1, {"controller", "timeout", "rank"}, {"dead", "alive"});
    result = f.ok() ? RankCmd(*f) : absl::StatusOr<Json>(f.status());
  } else {
    err << "eplbctl: unknown command \"" << cmd
        << "\"; expected layout, route, plan, diff, status, placement, trigger, pause, resume, "
           "policy, rank or help\n";
    return 2;
  }
  if (!result.ok()) {
    const absl::StatusCode code = result.status().code();
    err << "eplbctl " << cmd << ": " << result.status().message() << "\n";
    return code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ||
                   code == absl::StatusCode::kFailedPrecondition
               ? 2
               : 1;
  }
  out << result->dump() << "\n";
  return 0;
}

}  // namespace eplb
