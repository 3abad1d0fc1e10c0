// The C ABI of worker/eplb_worker_c.h over WorkerRuntime + ControllerClient.
#include "worker/eplb_worker_c.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/controller_client.h"
#include "worker/runtime.h"

struct eplb_worker {
  std::unique_ptr<eplb::CpuFabric> fabric;
  std::unique_ptr<eplb::WorkerRuntime> runtime;
  std::unique_ptr<eplb::ControllerClient> client;
};

namespace {

int Fail(const absl::Status& s, char* err, size_t err_len) {
  if (err != nullptr && err_len > 0) {
    const std::string m(s.message());
    const size_t n = std::min(m.size(), err_len - 1);
    std::memcpy(err, m.data(), n);
    err[n] = '\0';
  }
  return -1;
}

absl::StatusOr<eplb::WorkerOptions> ParseConfig(const char* text, std::string& controller,
                                                int& report_ms, std::string& fabric_dir) {
  if (text == nullptr) return absl::InvalidArgumentError("config is NULL");
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("config is not a JSON object");
  }
  static const std::set<std::string> kKeys = {
      "worker_id",  "ranks",     "node",       "num_logical", "num_redundant", "ep_size",
      "num_shared", "num_nodes", "num_layers", "row_bytes",   "controller",    "report_interval_ms",
      "fabric_dir"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (kKeys.count(it.key()) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown config key \"", it.key(), "\""));
    }
  }
  auto get_int = [&](const char* key, int def, bool required) -> absl::StatusOr<int> {
    if (!j.contains(key)) {
      if (required) return absl::InvalidArgumentError(absl::StrCat("config needs \"", key, "\""));
      return def;
    }
    if (!j[key].is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config \"", key, "\" must be an integer, got ", j[key].dump()));
    }
    return j[key].get<int>();
  };
  eplb::WorkerOptions o;
  if (!j.contains("worker_id") || !j["worker_id"].is_string()) {
    return absl::InvalidArgumentError("config needs \"worker_id\" (a string)");
  }
  o.worker_id = j["worker_id"].get<std::string>();
  if (!j.contains("ranks") || !j["ranks"].is_array()) {
    return absl::InvalidArgumentError("config needs \"ranks\" (an array of ints)");
  }
  for (const auto& r : j["ranks"]) {
    if (!r.is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config \"ranks\" holds ", r.dump(), ", expected integers"));
    }
    o.ranks.push_back(r.get<int>());
  }
  int* fields[] = {&o.node,
                   &o.layout.num_logical,
                   &o.layout.num_redundant,
                   &o.layout.ep_size,
                   &o.layout.num_shared,
                   &o.layout.num_nodes,
                   &o.num_layers,
                   &report_ms};
  const char* names[] = {"node",       "num_logical", "num_redundant", "ep_size",
                         "num_shared", "num_nodes",   "num_layers",    "report_interval_ms"};
  const int defaults[] = {0, 0, 0, 0, 1, 1, 1, 0};
  const bool required[] = {false, true, true, true, false, false, false, false};
  for (int i = 0; i < 8; ++i) {
    auto v = get_int(names[i], defaults[i], required[i]);
    if (!v.ok()) return v.status();
    *fields[i] = *v;
  }
  auto row_bytes = get_int("row_bytes", 4096, false);
  if (!row_bytes.ok()) return row_bytes.status();
  if (*row_bytes < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("config \"row_bytes\" must be >= 2, got ", *row_bytes));
  }
  o.tensors = {{"w13", *row_bytes * 2 / 3}, {"w2", *row_bytes - *row_bytes * 2 / 3}};
  for (const char* key : {"controller", "fabric_dir"}) {
    if (j.contains(key) && !j[key].is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("config \"", key, "\" must be a string"));
    }
  }
  controller = j.value("controller", "");
  fabric_dir = j.value("fabric_dir", "");
  return o;
}

}  // namespace

extern "C" {

eplb_worker* eplb_worker_create(const char* config_json, char* err, size_t err_len) {
  std::string controller, fabric_dir;
  int report_ms = 0;
  auto o = ParseConfig(config_json, controller, report_ms, fabric_dir);
  if (!o.ok()) {
    Fail(o.status(), err, err_len);
    return nullptr;
  }
  if (report_ms < 0) {
    Fail(absl::InvalidArgumentError(
             absl::StrCat("report_interval_ms must be >= 0, got ", report_ms)),
         err, err_len);
    return nullptr;
  }
  auto w = std::make_unique<eplb_worker>();
  w->fabric = std::make_unique<eplb::CpuFabric>(std::max(o->layout.ep_size, 1));
  if (!fabric_dir.empty()) w->fabric->SetSharedDirectory(fabric_dir);
  auto rt = eplb::WorkerRuntime::Create(*o, w->fabric.get());
  if (!rt.ok()) {
    Fail(rt.status(), err, err_len);
    return nullptr;
  }
  w->runtime = *std::move(rt);
  if (!controller.empty()) {
    w->client = std::make_unique<eplb::ControllerClient>(
        w->runtime.get(), eplb::ControllerClientOptions{controller, absl::Milliseconds(report_ms)});
    if (absl::Status s = w->client->Start(); !s.ok()) {
      Fail(absl::Status(s.code(),
                        absl::StrCat("cannot register with ", controller, ": ", s.message())),
           err, err_len);
      return nullptr;
    }
  } else {
    const eplb::ExpertLayout& layout = w->runtime->layout();
    const eplb::PlacementMap id =
        eplb::PlacementMap::Identity(o->num_layers, layout.num_logical(), layout.num_physical());
    if (absl::Status s = w->runtime->Adopt(id, 1); !s.ok()) {
      Fail(s, err, err_len);
      return nullptr;
    }
  }
  return w.release();
}

void eplb_worker_destroy(eplb_worker* w) {
  if (w == nullptr) return;
  if (w->client != nullptr) w->client->Stop();
  delete w;
}

static absl::Status CheckLayer(const eplb_worker* w, int layer) {
  const int layers = w->runtime->options().num_layers;
  if (layer < 0 || layer >= layers) {
    return absl::OutOfRangeError(
        absl::StrCat("layer ", layer, " is out of range [0, ", layers, ")"));
  }
  return absl::OkStatus();
}

int eplb_worker_record(eplb_worker* w, int layer, const int64_t* physical_ids, int64_t n, char* err,
                       size_t err_len) {
  if (w == nullptr) return Fail(absl::InvalidArgumentError("worker is NULL"), err, err_len);
  if (absl::Status s = CheckLayer(w, layer); !s.ok()) return Fail(s, err, err_len);
  if (n < 0 || (n > 0 && physical_ids == nullptr)) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("bad id buffer (n = ", n, ")")), err,
                err_len);
  }
  w->runtime->RecordReceived(layer, absl::MakeConstSpan(physical_ids, n));
  return 0;
}

int eplb_worker_record_counts(eplb_worker* w, int layer, const int64_t* counts,
                              int64_t num_physical, char* err, size_t err_len) {
  if (w == nullptr) return Fail(absl::InvalidArgumentError("worker is NULL"), err, err_len);
  if (absl::Status s = CheckLayer(w, layer); !s.ok()) return Fail(s, err, err_len);
  const int p = w->runtime->layout().num_physical();
  if (counts == nullptr || num_physical != p) {
    return Fail(absl::InvalidArgumentError(
                    absl::StrCat("counts must hold P = ", p, " entries, got ", num_physical)),
                err, err_len);
  }
  for (int64_t i = 0; i < num_physical; ++i) {
    if (counts[i] < 0) {
      return Fail(absl::InvalidArgumentError(
                      absl::StrCat("count of physical id ", i, " is negative: ", counts[i])),
                  err, err_len);
    }
  }
  w->runtime->RecordCounts(layer, absl::MakeConstSpan(counts, num_physical));
  return 0;
}

int eplb_worker_report(eplb_worker* w, int64_t first_step, int64_t last_step, char* err,
                       size_t err_len) {
  if (w == nullptr) return Fail(absl::InvalidArgumentError("worker is NULL"), err, err_len);
  if (w->client == nullptr) {
    return Fail(absl::FailedPreconditionError("no controller configured"), err, err_len);
  }
  if (absl::Status s = w->client->ReportNow(first_step, last_step); !s.ok()) {
    return Fail(s, err, err_len);
  }
  return 0;
}

uint64_t eplb_worker_version(eplb_worker* w) {
  return w == nullptr ? 0 : w->runtime->applied_version();
}

int eplb_worker_dispatch_table(eplb_worker* w, int rank, int layer, int32_t* out, int64_t out_len,
                               char* err, size_t err_len) {
  if (w == nullptr) return Fail(absl::InvalidArgumentError("worker is NULL"), err, err_len);
  if (absl::Status s = CheckLayer(w, layer); !s.ok()) return Fail(s, err, err_len);
  const eplb::ExpertLayout& layout = w->runtime->layout();
  if (rank < 0 || rank >= layout.ep_size()) {
    return Fail(absl::OutOfRangeError(
                    absl::StrCat("rank ", rank, " is out of range [0, ", layout.ep_size(), ")")),
                err, err_len);
  }
  if (out == nullptr || out_len < layout.num_logical()) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("out must hold E = ", layout.num_logical(),
                                                        " entries, got ", out_len)),
                err, err_len);
  }
  const std::vector<int32_t> row = w->runtime->DispatchRow(rank, layer);
  std::copy(row.begin(), row.end(), out);
  return 0;
}

int eplb_worker_physical_to_logical(eplb_worker* w, int layer, int32_t* out, int64_t out_len,
                                    char* err, size_t err_len) {
  if (w == nullptr) return Fail(absl::InvalidArgumentError("worker is NULL"), err, err_len);
  if (absl::Status s = CheckLayer(w, layer); !s.ok()) return Fail(s, err, err_len);
  const auto map = w->runtime->map();
  const std::vector<int32_t>& row = map->physical_to_logical(layer);
  if (out == nullptr || out_len < static_cast<int64_t>(row.size())) {
    return Fail(absl::InvalidArgumentError(
                    absl::StrCat("out must hold P = ", row.size(), " entries, got ", out_len)),
                err, err_len);
  }
  std::copy(row.begin(), row.end(), out);
  return 0;
}

int eplb_worker_step_boundary(eplb_worker* w, eplb_all_min_fn all_min, void* user, char* ran,
                              size_t ran_len, char* err, size_t err_len) {
  if (w == nullptr || all_min == nullptr) {
    return Fail(absl::InvalidArgumentError("worker or all_min is NULL"), err, err_len);
  }
  auto r = w->runtime->StepBoundary(
      [&](const std::vector<int64_t>& v) -> absl::StatusOr<std::vector<int64_t>> {
        std::vector<int64_t> out = v;
        if (all_min(out.data(), static_cast<int>(out.size()), user) != 0) {
          return absl::UnavailableError("the engine's all_min failed");
        }
        return out;
      });
  if (!r.ok()) return Fail(r.status(), err, err_len);
  if (ran != nullptr && ran_len > 0) {
    const size_t n = std::min(r->size(), ran_len - 1);
    std::memcpy(ran, r->data(), n);
    ran[n] = '\0';
  }
  return 0;
}

}  // extern "C"
