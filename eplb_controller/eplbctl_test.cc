#include "eplb_controller/eplbctl.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/formats.h"
#include "core/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace eplb {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;

struct Result {
  int code;
  std::string out;
  std::string err;
};

Result Ctl(std::vector<std::string> args) {
  std::ostringstream out, err;
  const int code = RunEplbctl(args, out, err);
  return {code, out.str(), err.str()};
}

Json Vectors() {
  return Json::parse(*ReadFileToString(testing::RunfilePath("tests/golden/public_vectors.json")));
}

std::string TempFile(const std::string& name, const std::string& content) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(dir ? dir : "/tmp") + "/" + name;
  std::ofstream(path) << content;
  return path;
}

TEST(EplbctlTest, LayoutSeedRegressionVector) {
  const Json c = Vectors()["layout_seed_regression"];
  Result r = Ctl({"layout", "--num-logical", "8", "--num-redundant", "2", "--ep-size", "2",
                  "--num-shared", "1"});
  ASSERT_EQ(r.code, 0) << r.err;
  const Json j = Json::parse(r.out);
  EXPECT_EQ(j["num_physical"], c["num_physical"]);
  EXPECT_EQ(j["routed_slots_per_rank"], c["routed_slots_per_rank"]);
  EXPECT_EQ(j["slots_per_rank"], c["slots_per_rank"]);
  EXPECT_EQ(j["num_slots"], c["num_slots"]);
  EXPECT_EQ(j["routed_slot_of_physical"], c["routed_slot_of_physical"]);
  EXPECT_EQ(j["shared_slot_of_rank"], Json::parse("[[5],[11]]"));
  EXPECT_EQ(j["checkpoint_slots"]["8"], c["shared_weight_global_slots"]);
}

TEST(EplbctlTest, LayoutDeepSeekScaleVectorAndRoutedCheckpoints) {
  const Json c = Vectors()["layout_deepseek_scale"];
  Result r = Ctl({"layout", "--num-logical=256", "--num-redundant=32", "--ep-size=16",
                  "--num-shared=1", "--num-nodes=2"});
  ASSERT_EQ(r.code, 0) << r.err;
  const Json j = Json::parse(r.out);
  EXPECT_EQ(j["routed_slot_of_physical"][100], 105);
  EXPECT_EQ(j["routed_slot_of_physical"][287], 302);
  EXPECT_EQ(j["shared_slot_of_rank"][3][0], 75);
  EXPECT_EQ(j["checkpoint_slots"]["256"], c["shared_weight_global_slots"]);
  // With a placement, routed checkpoint ids list every replica's slot.
  const std::string placement =
      TempFile("p.json", R"({"physical_to_logical_map": [[0,1,2,3,4,5,6,7,0,0]]})");
  Result r2 = Ctl({"layout", "--num-logical", "8", "--num-redundant", "2", "--ep-size", "2",
                   "--num-shared", "1", "--placement", placement, "--layer", "0"});
  ASSERT_EQ(r2.code, 0) << r2.err;
  const Json j2 = Json::parse(r2.out);
  EXPECT_EQ(j2["checkpoint_slots"]["0"], Json::parse("[0,9,10]"));
  EXPECT_EQ(j2["checkpoint_slots"]["8"], Json::parse("[5,11]"));
}

TEST(EplbctlTest, RouteTopkVector) {
  // E=256, R=8, W=8, rank 7 (L=33, owns 231..263): physical p < 256 holds p, 256..263 hold
  // 100..107, so logical 107 has replicas 107 and 263.
  std::string row = "[";
  for (int p = 0; p < 264; ++p) {
    row += std::to_string(p < 256 ? p : p - 156) + (p + 1 < 264 ? "," : "]");
  }
  const std::string placement =
      TempFile("p256.json", "{\"physical_to_logical_map\": [" + row + "]}");
  Result r = Ctl({"route", "--placement", placement, "--layer", "0", "--rank", "7", "--ep-size",
                  "8", "--num-shared", "1", "--topk", "0,33,107"});
  ASSERT_EQ(r.code, 0) << r.err;
  const Json j = Json::parse(r.out);
  // Rank 7 uses its own replica of 107 (263); 0 and 33 have one replica each.
  EXPECT_EQ(j["physical"], Json::parse("[0,33,263]"));
  EXPECT_EQ(j["load_accounting_ids"], Json::parse("[0,33,263]"));
  EXPECT_EQ(j["slots"], Json::parse("[0,34,270,271]"));
}

TEST(EplbctlTest, RouteWaterfillVector) {
  const Json c = Vectors()["waterfill_static_example"];
  const std::string placement =
      TempFile("p8.json", R"({"physical_to_logical_map": [[0,1,2,3,4,5,6,7]]})");
  for (int row = 0; row < 4; ++row) {
    Result r = Ctl({"route", "--placement", placement, "--layer", "0", "--rank", "0", "--ep-size",
                    "4", "--num-shared", "1", "--topk", "0,2", "--batch-size", "64",
                    "--batch-routed-load", "2,4,1,1", "--row", std::to_string(row)});
    ASSERT_EQ(r.code, 0) << r.err;
    const Json j = Json::parse(r.out);
    EXPECT_EQ(j["waterfill"]["level"], c["level"]);
    EXPECT_EQ(j["waterfill"]["headroom"], c["headroom"]);
    EXPECT_EQ(j["waterfill"]["shared_rank"], c["chosen_rank_per_row"][row]);
    EXPECT_EQ(j["waterfill"]["shared_slot"], c["shared_slot_per_row"][row]);
  }
}

TEST(EplbctlTest, PlanReproducesDeepSeekAndWritesOut) {
  const Json c = Vectors()["deepseek_readme_example"];
  const std::string load = TempFile("load.json", Json{{"logical_count", c["weight"]}}.dump());
  Result r = Ctl({"plan", "--load", load, "--num-physical", "16", "--ep-size", "8", "--num-nodes",
                  "2", "--num-groups", "4", "--algorithm", "deepseek"});
  ASSERT_EQ(r.code, 0) << r.err;
  const Json j = Json::parse(r.out);
  EXPECT_EQ(j["physical_to_logical_map"], c["physical_to_logical_map"]);
  EXPECT_EQ(j["stats"]["experts_moved"], 0);
  EXPECT_GE(j["stats"]["compute_seconds"].get<double>(), 0);
  EXPECT_EQ(j["logical_to_all_physical_map"].size(), 2u);
  // balanced, then incremental from it, written to a file.
  const std::string current = TempFile("cur.json", j.dump());
  const std::string out = TempFile("out.json", "");
  Result r2 = Ctl({"plan", "--load", load, "--num-physical", "16", "--ep-size", "8", "--num-nodes",
                   "2", "--num-groups", "4", "--algorithm", "incremental", "--current", current,
                   "--bytes-per-expert", "1000", "--out", out});
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_TRUE(r2.out.empty());
  const Json j2 = Json::parse(*ReadFileToString(out));
  EXPECT_GE(j2["stats"]["balancedness"].get<double>(), j["stats"]["balancedness"].get<double>());
  EXPECT_EQ(j2["stats"]["bytes_moved"].get<double>(),
            1000.0 * j2["stats"]["experts_moved"].get<double>());
}

TEST(EplbctlTest, BadInputExitsTwoWithOneLineAndNoStdout) {
  const std::string load = TempFile("l.json", R"({"logical_count": [[1,2,3,4]]})");
  const std::string nan = TempFile("nan.json", R"({"logical_count": [[1,-2,3,4]]})");
  const std::string ragged = TempFile("r.json", R"({"logical_count": [[1,2,3,4],[1]]})");
  const std::string broken = TempFile("b.json", R"({"logical_count": [[1,2)");
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"layout", "--num-logical", "256", "--num-redundant", "30", "--ep-size", "16",
        "--num-shared", "1"},
       "R=16 or R=32"},
      {{"layout", "--bogus", "1"}, "unknown flag --bogus"},
      {{"layout", "--num-logical", "x"}, "not an integer"},
      {{"frobnicate"}, "unknown command"},
      {{"plan", "--load", load, "--num-physical", "6", "--ep-size", "4"}, "try P=4 or 8"},
      {{"plan", "--load", load, "--num-physical", "8", "--ep-size", "4", "--algorithm", "magic"},
       "unknown algorithm"},
      {{"plan", "--load", nan, "--num-physical", "8", "--ep-size", "4"}, "[0][1] = -2"},
      {{"plan", "--load", ragged, "--num-physical", "8", "--ep-size", "4"}, "expected 4"},
      {{"plan", "--load", broken, "--num-physical", "8", "--ep-size", "4"}, "not valid JSON"},
      {{"plan", "--load", "/nonexistent.json", "--num-physical", "8", "--ep-size", "4"},
       "cannot open"},
      {{"plan", "--load", load, "--num-physical", "8", "--ep-size", "4", "--dead-ranks", "1,x"},
       "not an integer"},
      {{"route", "--placement", load, "--layer", "0"}, "physical_to_logical_map"},
  };
  for (const auto& [args, want] : cases) {
    Result r = Ctl(args);
    EXPECT_EQ(r.code, 2) << args[0] << " " << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_THAT(r.err, HasSubstr(want));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  const std::string p8 =
      TempFile("p8b.json", R"({"physical_to_logical_map": [[0,1,2,3,4,5,6,7]]})");
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"route", "--placement", p8, "--layer", "3", "--rank", "0",
                                 "--ep-size", "4", "--num-shared", "1", "--topk", "1"},
        std::vector<std::string>{"route", "--placement", p8, "--layer", "0", "--rank", "9",
                                 "--ep-size", "4", "--num-shared", "1", "--topk", "1"},
        std::vector<std::string>{"route", "--placement", p8, "--layer", "0", "--rank", "0",
                                 "--ep-size", "4", "--num-shared", "1", "--topk", "1,99"}}) {
    Result r = Ctl(args);
    EXPECT_EQ(r.code, 2);
    EXPECT_TRUE(r.out.empty());
  }
}

TEST(EplbctlTest, DiffPrintsTheMovePlan) {
  // E=2, P=8, W=4 (L=2), 2 nodes: ranks 2 and 3 receive expert 1 twice each.
  const std::string from =
      TempFile("from.json", R"({"physical_to_logical_map": [[1,0,1,0,0,0,0,0]]})");
  const std::string to = TempFile("to.json", R"({"physical_to_logical_map": [[0,1,1,0,1,1,1,1]]})");
  Result r = Ctl({"diff", "--from", from, "--to", to, "--ep-size", "4", "--num-nodes", "2",
                  "--bytes-per-expert", "100"});
  ASSERT_EQ(r.code, 0) << r.err;
  const Json j = Json::parse(r.out);
  EXPECT_EQ(j["rows_changed"], 6);
  EXPECT_EQ(j["peer_transfers"], 2);
  EXPECT_EQ(j["bytes"].get<double>(), 200.0);
  int after = 0;
  for (const auto& t : j["transfers"]) {
    after += t["after_transfer"].get<bool>();
    if (t["kind"] == "peer") {
      EXPECT_LT(t["src_rank"].get<int>(), 2);
    }
  }
  EXPECT_EQ(after, 2);
  const std::string bad = TempFile("bad.json", R"({"physical_to_logical_map": [[0,1,1,0]]})");
  Result r2 = Ctl({"diff", "--from", from, "--to", bad, "--ep-size", "4"});
  EXPECT_EQ(r2.code, 2);
  EXPECT_TRUE(r2.out.empty());
  EXPECT_THAT(r2.err, HasSubstr("expected [1][8]"));
}

}  // namespace
}  // namespace eplb
