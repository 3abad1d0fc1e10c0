#include "core/formats.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace eplb {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(FormatsTest, LoadTwoAndThreeDimensional) {
  auto a = ParseLoadJson(R"({"logical_count": [[1, 2.5], [3, 4]], "extra": 1})");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT((*a)[0], ElementsAre(1, 2.5));
  auto b = ParseLoadJson(R"({"logical_count": [[[1, 2]], [[10, 20]]]})");
  ASSERT_TRUE(b.ok());
  EXPECT_THAT((*b)[0], ElementsAre(11, 22));
  auto steps = ParseLoadStepsJson(R"({"logical_count": [[[1, 2]], [[10, 20]]]})");
  ASSERT_TRUE(steps.ok());
  EXPECT_EQ(steps->size(), 2u);
}

TEST(FormatsTest, LoadErrorsNameTheProblem) {
  EXPECT_THAT(ParseLoadJson("{").status().message(), HasSubstr("not valid JSON"));
  EXPECT_THAT(ParseLoadJson("[1]").status().message(), HasSubstr("JSON object"));
  EXPECT_THAT(ParseLoadJson("{}").status().message(), HasSubstr("no \"logical_count\""));
  EXPECT_THAT(ParseLoadJson(R"({"logical_count": [[1, -2]]})").status().message(),
              HasSubstr("[0][1] = -2"));
  EXPECT_THAT(ParseLoadJson(R"({"logical_count": [[1, 2], [3]]})").status().message(),
              HasSubstr("has 1 experts; expected 2"));
  EXPECT_THAT(ParseLoadJson(R"({"logical_count": [[1, "x"]]})").status().message(),
              HasSubstr("expected a number"));
  EXPECT_THAT(ParseLoadJson(R"({"logical_count": [1, 2]})").status().message(),
              HasSubstr("1 array dimensions"));
  EXPECT_THAT(
      ParseLoadJson(R"({"logical_count": [[[1, 2]], [[1, 2], [3, 4]]]})").status().message(),
      HasSubstr("like step 0"));
  EXPECT_FALSE(ParseLoadJson(R"({"logical_count": [[1e999]]})").ok());
}

TEST(FormatsTest, Placement) {
  auto p = ParsePlacementJson(R"({"physical_to_logical_map": [[0, 1, 0]]})");
  ASSERT_TRUE(p.ok());
  EXPECT_THAT((*p)[0], ElementsAre(0, 1, 0));
  EXPECT_THAT(ParsePlacementJson(R"({"physical_to_logical_map": [[0, 1.5]]})").status().message(),
              HasSubstr("[0][1] = 1.5"));
  EXPECT_FALSE(ParsePlacementJson(R"({"x": 1})").ok());
  EXPECT_FALSE(ParsePlacementJson(R"({"physical_to_logical_map": []})").ok());
}

TEST(FormatsTest, ReadMissingFile) {
  EXPECT_EQ(ReadFileToString("/nonexistent/x.json").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace eplb
