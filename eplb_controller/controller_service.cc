#include "eplb_controller/controller_service.h"

#include <memory>

#include "common/mutex.h"

namespace eplb {
namespace {

// Writes updates straight into one worker's stream, from the rollout thread: no writer thread
// and no hand-off per update (a rollout to 256 workers is 512 of them). The stream's handler
// thread only reads; gRPC allows one reader and one writer at a time, and the mutex keeps
// writers to one. Once the stream ends, Send fails and the worker counts as unreachable.
// A Write blocks only while the worker leaves more than the stream's flow-control window
// (64 KB and up) unread; the controller sends from a thread of its own and, at the phase
// deadline, Cancels the streams whose write has not returned.
class StreamSink final : public UpdateSink {
 public:
  StreamSink(grpc::ServerContext* ctx,
             grpc::ServerReaderWriter<v1::PlacementUpdate, v1::PlacementAnswer>* stream)
      : ctx_(ctx), stream_(stream) {}
  bool Send(const v1::PlacementUpdate& update) override {
    MutexLock lock(&mu_);
    if (stream_ == nullptr) return false;
    if (!stream_->Write(update)) {
      stream_ = nullptr;
      ctx_->TryCancel();
      return false;
    }
    return true;
  }
  // The handler is returning: no more writes, and no cancel of a finished call.
  void Close() {
    {
      MutexLock lock(&cancel_mu_);
      open_ = false;
    }
    MutexLock lock(&mu_);
    stream_ = nullptr;
  }
  // Unblocks a Send stuck on a worker that stopped reading (its own lock: Send holds mu_).
  void Cancel() override {
    MutexLock lock(&cancel_mu_);
    if (open_) ctx_->TryCancel();
  }

 private:
  Mutex cancel_mu_;
  bool open_ ABSL_GUARDED_BY(cancel_mu_) = true;
  Mutex mu_;
  grpc::ServerContext* const ctx_;
  grpc::ServerReaderWriter<v1::PlacementUpdate, v1::PlacementAnswer>* stream_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

grpc::Status WorkerService::Register(grpc::ServerContext*, const v1::RegisterRequest* req,
                                     v1::RegisterResponse* resp) {
  auto r = controller_->Register(*req);
  if (!r.ok()) return ToGrpcStatus(r.status());
  *resp = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status WorkerService::ReportLoad(grpc::ServerContext*, const v1::LoadReport* req,
                                       v1::LoadReportAck* resp) {
  if (absl::Status s = controller_->ReportLoad(*req); !s.ok()) return ToGrpcStatus(s);
  resp->set_current_version(controller_->version());
  return grpc::Status::OK;
}

grpc::Status WorkerService::StreamLoad(
    grpc::ServerContext*, grpc::ServerReaderWriter<v1::LoadReportAck, v1::LoadReport>* stream) {
  v1::LoadReport r;
  while (stream->Read(&r)) {
    if (absl::Status s = controller_->ReportLoad(r); !s.ok()) {
      v1::LoadReportAck a;
      a.set_current_version(controller_->version());
      a.set_rejected(true);
      a.set_error_code(static_cast<int32_t>(s.code()));
      a.set_error_message(std::string(s.message()));
      a.set_first_step(r.first_step());
      if (!stream->Write(a)) break;
    }
  }
  return grpc::Status::OK;
}

grpc::Status WorkerService::StreamPlacements(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<v1::PlacementUpdate, v1::PlacementAnswer>* stream) {
  v1::PlacementAnswer hello;
  if (!stream->Read(&hello)) return grpc::Status::OK;
  auto sink = std::make_shared<StreamSink>(ctx, stream);
  if (absl::Status s = controller_->Attach(hello.worker_id(), hello.session_id(), sink); !s.ok()) {
    return ToGrpcStatus(s);
  }
  v1::PlacementAnswer a;
  while (stream->Read(&a)) controller_->OnAnswer(a);
  sink->Close();
  controller_->Detach(hello.worker_id(), sink.get());
  return grpc::Status::OK;
}

grpc::Status AdminService::GetStatus(grpc::ServerContext*, const v1::GetStatusRequest*,
                                     v1::GetStatusResponse* resp) {
  *resp = controller_->Status();
  return grpc::Status::OK;
}

grpc::Status AdminService::GetPlacement(grpc::ServerContext*, const v1::GetPlacementRequest*,
                                        v1::Placement* resp) {
  *resp = controller_->CurrentPlacement();
  return grpc::Status::OK;
}

grpc::Status AdminService::TriggerRebalance(grpc::ServerContext*,
                                            const v1::TriggerRebalanceRequest* req,
                                            v1::TriggerRebalanceResponse* resp) {
  const RebalanceRecord r = controller_->TriggerRebalance(req->reason(), req->force());
  resp->set_version(controller_->version());
  resp->set_result(r.result + (r.reason.empty() ? "" : ": " + r.reason));
  return grpc::Status::OK;
}

grpc::Status AdminService::SetPolicy(grpc::ServerContext*, const v1::SetPolicyRequest* req,
                                     v1::Policy* resp) {
  const v1::Policy& p = req->policy();
  if (!p.algorithm().empty() && p.algorithm() != "incremental" && p.algorithm() != "balanced" &&
      p.algorithm() != "deepseek") {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "algorithm " + p.algorithm() +
                            " is unknown; expected incremental, "
                            "balanced or deepseek");
  }
  if (p.trigger_balancedness() < 0 || p.trigger_balancedness() > 1 ||
      p.min_balancedness_gain() < 0 || p.hysteresis() < 0 || p.min_interval_ms() < 0 ||
      p.layers_per_rollout_step() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "policy values out of range: trigger in [0,1], gain, hysteresis, "
                        "interval and layers per rollout step >= 0");
  }
  ControllerPolicy c = controller_->policy();
  c.trigger_balancedness = p.trigger_balancedness();
  c.min_balancedness_gain = p.min_balancedness_gain();
  c.hysteresis = p.hysteresis();
  c.min_interval = absl::Milliseconds(p.min_interval_ms());
  c.max_moves = p.max_moves_per_rebalance() > 0 ? p.max_moves_per_rebalance() : -1;
  c.layers_per_rollout = p.layers_per_rollout_step();
  if (!p.algorithm().empty()) c.algorithm = p.algorithm();
  c.paused = p.paused();
  controller_->SetPolicy(c);
  *resp = p;
  return grpc::Status::OK;
}

grpc::Status AdminService::SetRankState(grpc::ServerContext*, const v1::SetRankStateRequest* req,
                                        v1::Empty*) {
  return ToGrpcStatus(controller_->SetRankDead(req->rank(), req->dead()));
}

}  // namespace eplb
