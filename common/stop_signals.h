// Graceful shutdown for the daemons' main(): SIGTERM and SIGINT notify one process-wide
// notification that the main loop waits on.
//
//   absl::Notification* stop = InstallStopSignals();
//   while (!stop->WaitForNotificationWithTimeout(interval)) { ... }
#ifndef EPLB_COMMON_STOP_SIGNALS_H_
#define EPLB_COMMON_STOP_SIGNALS_H_

#include <csignal>

#include "absl/synchronization/notification.h"

namespace eplb {

inline absl::Notification* InstallStopSignals() {
  static absl::Notification* const stop = new absl::Notification();
  struct Handler {
    static void On(int) {
      if (!stop->HasBeenNotified()) stop->Notify();
    }
  };
  std::signal(SIGTERM, Handler::On);
  std::signal(SIGINT, Handler::On);
  return stop;
}

}  // namespace eplb

#endif  // EPLB_COMMON_STOP_SIGNALS_H_
