// ControllerClient: connects a WorkerRuntime to the controller over gRPC.
//
// Start() registers (adopting the controller's placement when the worker's applied version
// differs: the resync), opens the placement stream and answers its updates through the runtime,
// and, with a report interval, sends load reports in the background. When the stream breaks it
// re-registers with exponential backoff (capped at max_backoff) until Stop().
//
//   ControllerClient client(runtime.get(), {"10.0.0.5:50051"});
//   EPLB_RETURN_IF_ERROR(client.Start());
#ifndef EPLB_WORKER_CONTROLLER_CLIENT_H_
#define EPLB_WORKER_CONTROLLER_CLIENT_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/mutex.h"
#include "grpcpp/grpcpp.h"
#include "proto/eplb.grpc.pb.h"
#include "worker/runtime.h"

namespace eplb {

struct ControllerClientOptions {
  std::string target;                                     // host:port
  absl::Duration report_interval = absl::ZeroDuration();  // 0: reports only via ReportNow
  // Background reports go over one StreamLoad stream (cheap per report) instead of a
  // ReportLoad call each; ReportNow always makes a call (its caller wants the status).
  bool stream_reports = true;
  absl::Duration max_backoff = absl::Seconds(5);
};

class ControllerClient {
 public:
  ControllerClient(WorkerRuntime* runtime, ControllerClientOptions options);
  ~ControllerClient();

  // Registers once (synchronously, so errors surface here) and starts the background threads.
  absl::Status Start();
  void Stop();
  // Sends the counters recorded since the last report.
  absl::Status ReportNow(int64_t first_step, int64_t last_step);
  std::string session_id() const;
  int reconnects() const { return reconnects_.load(); }
  // Background reports the controller rejected (streamed ones are answered only then).
  int rejected_reports() const { return rejected_.load(); }

 private:
  absl::Status Register();
  void StreamLoop();
  void ReportLoop();
  // One background report over the stream, (re)opening it as needed; false: it failed.
  bool StreamReport(const v1::LoadReport& r);

  struct AnswerWriter {
    Mutex mu;
    grpc::ClientReaderWriter<v1::PlacementAnswer, v1::PlacementUpdate>* stream ABSL_GUARDED_BY(mu) =
        nullptr;
  };

  WorkerRuntime* runtime_;
  const ControllerClientOptions options_;
  std::unique_ptr<v1::EplbWorkerService::Stub> stub_;
  mutable Mutex mu_;
  std::string session_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<grpc::ClientContext> stream_ctx_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<int> reconnects_{0};
  std::atomic<int> rejected_{0};
  // The report stream (used by the report thread only) and the thread reading its rejections.
  std::unique_ptr<grpc::ClientContext> load_ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::LoadReport, v1::LoadReportAck>> load_;
  std::thread load_reader_;
  int64_t step_ = 0;
  std::thread stream_thread_;
  std::thread report_thread_;
};

}  // namespace eplb

#endif  // EPLB_WORKER_CONTROLLER_CLIENT_H_
