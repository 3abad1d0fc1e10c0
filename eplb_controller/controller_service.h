// The gRPC face of the Controller: the worker service (register, load reports, the placement
// stream) and the admin service (eplbctl). Thin: every decision is the Controller's.
//
// The placement stream is a bidirectional stream per worker: its first message identifies the
// worker (worker_id, session_id from Register); then PREPARE/COMMIT/ABORT updates flow down and
// ACK/NACK answers flow up. Updates are queued per stream and written by a writer thread, so a
// slow worker never blocks the controller.
#ifndef EPLB_EPLB_CONTROLLER_CONTROLLER_SERVICE_H_
#define EPLB_EPLB_CONTROLLER_CONTROLLER_SERVICE_H_

#include "eplb_controller/controller.h"
#include "grpcpp/grpcpp.h"
#include "proto/eplb.grpc.pb.h"

namespace eplb {

grpc::Status ToGrpcStatus(const absl::Status& s);

class WorkerService final : public v1::EplbWorkerService::Service {
 public:
  explicit WorkerService(Controller* controller) : controller_(controller) {}
  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest* req,
                        v1::RegisterResponse* resp) override;
  grpc::Status ReportLoad(grpc::ServerContext*, const v1::LoadReport* req,
                          v1::LoadReportAck* resp) override;
  grpc::Status StreamLoad(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<v1::LoadReportAck, v1::LoadReport>* stream) override;
  grpc::Status StreamPlacements(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<v1::PlacementUpdate, v1::PlacementAnswer>* stream) override;

 private:
  Controller* controller_;
};

class AdminService final : public v1::EplbAdminService::Service {
 public:
  explicit AdminService(Controller* controller) : controller_(controller) {}
  grpc::Status GetStatus(grpc::ServerContext*, const v1::GetStatusRequest*,
                         v1::GetStatusResponse* resp) override;
  grpc::Status GetPlacement(grpc::ServerContext*, const v1::GetPlacementRequest*,
                            v1::Placement* resp) override;
  grpc::Status TriggerRebalance(grpc::ServerContext*, const v1::TriggerRebalanceRequest* req,
                                v1::TriggerRebalanceResponse* resp) override;
  grpc::Status SetPolicy(grpc::ServerContext*, const v1::SetPolicyRequest* req,
                         v1::Policy* resp) override;
  grpc::Status SetRankState(grpc::ServerContext*, const v1::SetRankStateRequest* req,
                            v1::Empty* resp) override;

 private:
  Controller* controller_;
};

}  // namespace eplb

#endif  // EPLB_EPLB_CONTROLLER_CONTROLLER_SERVICE_H_
