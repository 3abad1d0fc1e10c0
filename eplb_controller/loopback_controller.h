// Test helper: a Controller served over real gRPC on 127.0.0.1, port 0 (worker and admin
// services), for integration tests, end-to-end tests and benchmarks.
//
//   auto lc = LoopbackController::Start(options);   // StatusOr
//   ControllerClient client(runtime, {(*lc)->target()});
#ifndef EPLB_EPLB_CONTROLLER_LOOPBACK_CONTROLLER_H_
#define EPLB_EPLB_CONTROLLER_LOOPBACK_CONTROLLER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "eplb_controller/controller.h"
#include "eplb_controller/controller_service.h"
#include "grpcpp/grpcpp.h"

namespace eplb {

class LoopbackController {
 public:
  static absl::StatusOr<std::unique_ptr<LoopbackController>> Start(
      Controller::Options options,
      std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>());
  ~LoopbackController() { server_->Shutdown(std::chrono::system_clock::now()); }

  Controller* controller() const { return controller_.get(); }
  const std::string& target() const { return target_; }

 private:
  LoopbackController() = default;
  std::unique_ptr<Controller> controller_;
  std::unique_ptr<WorkerService> worker_service_;
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<grpc::Server> server_;
  std::string target_;
};

inline absl::StatusOr<std::unique_ptr<LoopbackController>> LoopbackController::Start(
    Controller::Options options, std::shared_ptr<prometheus::Registry> registry) {
  auto c = Controller::Create(std::move(options), std::move(registry));
  if (!c.ok()) return c.status();
  std::unique_ptr<LoopbackController> lc(new LoopbackController());
  lc->controller_ = *std::move(c);
  lc->worker_service_ = std::make_unique<WorkerService>(lc->controller_.get());
  lc->admin_service_ = std::make_unique<AdminService>(lc->controller_.get());
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  b.RegisterService(lc->worker_service_.get());
  b.RegisterService(lc->admin_service_.get());
  lc->server_ = b.BuildAndStart();
  if (lc->server_ == nullptr || port == 0) {
    return absl::UnavailableError("cannot listen on 127.0.0.1:0");
  }
  lc->target_ = "127.0.0.1:" + std::to_string(port);
  return lc;
}

}  // namespace eplb

#endif  // EPLB_EPLB_CONTROLLER_LOOPBACK_CONTROLLER_H_
