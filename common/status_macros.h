// Return-on-error macros for absl::Status and absl::StatusOr. Our Abseil (20220623) predates
// absl/status/status_macros.h, so this is the small equivalent.
//
//   absl::Status Load(Foo& foo) {
//     EPLB_RETURN_IF_ERROR(Validate(foo));
//     EPLB_ASSIGN_OR_RETURN(Bar bar, MakeBar(foo));
//     ...
//   }
#ifndef EPLB_COMMON_STATUS_MACROS_H_
#define EPLB_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define EPLB_STATUS_CONCAT_INNER_(a, b) a##b
#define EPLB_STATUS_CONCAT_(a, b) EPLB_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the calling function if it is not OK.
#define EPLB_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::absl::Status eplb_status_ = (expr);        \
    if (!eplb_status_.ok()) return eplb_status_; \
  } while (false)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status, else moves the value
// into `lhs` (a declaration or an lvalue).
#define EPLB_ASSIGN_OR_RETURN(lhs, rexpr) \
  EPLB_ASSIGN_OR_RETURN_IMPL_(EPLB_STATUS_CONCAT_(eplb_statusor_, __LINE__), lhs, rexpr)

#define EPLB_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                \
  if (!statusor.ok()) return statusor.status();           \
  lhs = std::move(statusor).value()

#endif  // EPLB_COMMON_STATUS_MACROS_H_
