// A minimal blocking HTTP/1.0 GET over TCP, for scraping /metrics and health endpoints in tests,
// the simulator and eplbctl. Not a general HTTP client: no TLS, no redirects, no chunking.
//
//   EPLB_ASSIGN_OR_RETURN(std::string body, HttpGet("127.0.0.1", port, "/metrics"));
#ifndef EPLB_COMMON_HTTP_GET_H_
#define EPLB_COMMON_HTTP_GET_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace eplb {

// Returns the body of a 200 response; any other status is an error naming it.
absl::StatusOr<std::string> HttpGet(const std::string& host, int port, const std::string& path,
                                    absl::Duration timeout = absl::Seconds(5));

}  // namespace eplb

#endif  // EPLB_COMMON_HTTP_GET_H_
