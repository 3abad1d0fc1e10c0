#include "worker/controller_client.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace eplb {
namespace {

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace

ControllerClient::ControllerClient(WorkerRuntime* runtime, ControllerClientOptions options)
    : runtime_(runtime), options_(std::move(options)) {
  stub_ = v1::EplbWorkerService::NewStub(
      grpc::CreateChannel(options_.target, grpc::InsecureChannelCredentials()));
}

ControllerClient::~ControllerClient() { Stop(); }

absl::Status ControllerClient::Register() {
  v1::RegisterResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  const v1::RegisterRequest req = runtime_->RegisterRequest();
  if (absl::Status s = FromGrpc(stub_->Register(&ctx, req, &resp)); !s.ok()) return s;
  if (resp.resync().layers_size() > 0) {
    if (absl::Status s = runtime_->Resync(resp.resync()); !s.ok()) return s;
  }
  MutexLock l(&mu_);
  session_ = resp.session_id();
  return absl::OkStatus();
}

absl::Status ControllerClient::Start() {
  if (absl::Status s = Register(); !s.ok()) return s;
  stream_thread_ = std::thread([this] { StreamLoop(); });
  if (options_.report_interval > absl::ZeroDuration()) {
    report_thread_ = std::thread([this] { ReportLoop(); });
  }
  return absl::OkStatus();
}

void ControllerClient::Stop() {
  {
    MutexLock l(&mu_);
    stop_ = true;
    if (stream_ctx_ != nullptr) stream_ctx_->TryCancel();
  }
  if (stream_thread_.joinable()) stream_thread_.join();
  if (report_thread_.joinable()) report_thread_.join();
}

std::string ControllerClient::session_id() const {
  MutexLock l(&mu_);
  return session_;
}

void ControllerClient::StreamLoop() {
  absl::Duration backoff = absl::Milliseconds(50);
  while (true) {
    std::string session;
    grpc::ClientContext* ctx;
    {
      MutexLock l(&mu_);
      if (stop_) return;
      stream_ctx_ = std::make_unique<grpc::ClientContext>();
      ctx = stream_ctx_.get();
      session = session_;
    }
    auto stream = stub_->StreamPlacements(ctx);
    v1::PlacementAnswer hello;
    hello.set_worker_id(runtime_->options().worker_id);
    hello.set_session_id(session);
    hello.set_ack(true);
    hello.set_version(runtime_->applied_version());
    // Answers may come later, from the engine's step loop (collective backends): they write
    // through this, which the loop closes before the stream goes away.
    auto writer = std::make_shared<AnswerWriter>();
    writer->stream = stream.get();
    if (stream->Write(hello)) {
      v1::PlacementUpdate u;
      while (stream->Read(&u)) {
        if (u.phase() == v1::PlacementUpdate::ABORT) {
          runtime_->Submit(u, [](const v1::PlacementAnswer&) {});  // not answered
        } else {
          runtime_->Submit(u, [writer, session](const v1::PlacementAnswer& answer) {
            v1::PlacementAnswer a = answer;
            a.set_session_id(session);
            MutexLock l(&writer->mu);
            if (writer->stream != nullptr) writer->stream->Write(a);
          });
        }
        backoff = absl::Milliseconds(50);
      }
    }
    {
      MutexLock l(&writer->mu);
      writer->stream = nullptr;
    }
    stream->Finish();
    // Broken stream: re-register (resyncing the map if it changed), with backoff.
    while (true) {
      {
        MutexLock l(&mu_);
        if (stop_) return;
      }
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, options_.max_backoff);
      if (Register().ok()) {
        ++reconnects_;
        break;
      }
    }
  }
}

absl::Status ControllerClient::ReportNow(int64_t first_step, int64_t last_step) {
  const v1::LoadReport r = runtime_->TakeReport(session_id(), first_step, last_step);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::LoadReportAck ack;
  return FromGrpc(stub_->ReportLoad(&ctx, r, &ack));
}

bool ControllerClient::StreamReport(const v1::LoadReport& r) {
  if (load_ == nullptr) {
    load_ctx_ = std::make_unique<grpc::ClientContext>();
    load_ = stub_->StreamLoad(load_ctx_.get());
    auto* stream = load_.get();
    load_reader_ = std::thread([this, stream] {
      v1::LoadReportAck ack;
      while (stream->Read(&ack)) rejected_ += ack.rejected();
    });
  }
  if (load_->Write(r)) return true;
  // Broken (controller restarted or gone): close it; the next report opens a new one.
  load_ctx_->TryCancel();
  load_reader_.join();
  load_->Finish().IgnoreError();
  load_.reset();
  return false;
}

void ControllerClient::ReportLoop() {
  while (true) {
    {
      MutexLock l(&mu_);
      if (mu_.AwaitWithTimeout([this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; },
                               options_.report_interval)) {
        break;
      }
    }
    // A failed report is dropped, not retried.
    if (options_.stream_reports) {
      StreamReport(runtime_->TakeReport(session_id(), step_, step_ + 1));
    } else {
      ReportNow(step_, step_ + 1).IgnoreError();
    }
    step_ += 1;
  }
  if (load_ != nullptr) {
    load_->WritesDone();
    load_reader_.join();
    load_->Finish().IgnoreError();
    load_.reset();
  }
}

}  // namespace eplb
