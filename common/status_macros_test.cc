#include "common/status_macros.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"

namespace eplb {
namespace {

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  EPLB_ASSIGN_OR_RETURN(int half, Half(x));
  EPLB_ASSIGN_OR_RETURN(int quarter, Half(half));
  return quarter;
}

absl::Status CheckEven(int x) {
  EPLB_RETURN_IF_ERROR(Half(x).status());
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<std::string>> MakeOwned(bool ok) {
  if (!ok) return absl::NotFoundError("none");
  return std::make_unique<std::string>("owned");
}

absl::StatusOr<std::string> UseOwned(bool ok) {
  EPLB_ASSIGN_OR_RETURN(std::unique_ptr<std::string> p, MakeOwned(ok));
  return *p;
}

TEST(StatusMacrosTest, AssignOrReturnPropagatesTheFirstError) {
  EXPECT_EQ(Quarter(8).value(), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Quarter(3).status().message(), "odd");
}

TEST(StatusMacrosTest, ReturnIfErrorReturnsOnlyErrors) {
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_FALSE(CheckEven(5).ok());
}

TEST(StatusMacrosTest, MovesMoveOnlyValues) {
  EXPECT_EQ(UseOwned(true).value(), "owned");
  EXPECT_EQ(UseOwned(false).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace eplb
