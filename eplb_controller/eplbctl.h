// eplbctl: the operator CLI, as a library so tests run it in-process.
//
//   eplbctl layout --num-logical E --num-redundant R --ep-size W --num-shared S [--num-nodes N]
//                  [--placement FILE --layer L]
//   eplbctl route  --placement FILE --layer L --rank R --ep-size W --num-shared S
//                  --topk ID,ID,... [--num-nodes N] [--num-logical E] [--dispatch static|dynamic]
//                  [--waterfill sglang|exact] [--row I] [--batch-size N]
//                  [--batch-routed-load C0,C1,...] [--routed-scaling-factor F]
//   eplbctl plan   --load LOAD.json --num-physical P --ep-size W [--num-nodes N]
//                  [--num-groups G] [--algorithm deepseek|balanced|incremental]
//                  [--current PLACEMENT.json] [--dead-ranks 3,7] [--max-moves M]
//                  [--target-balancedness B] [--node-locality auto|keep|relax]
//                  [--forbid-duplicates] [--bytes-per-expert B] [--out FILE]
//   eplbctl diff   --from OLD.json --to NEW.json --ep-size W [--num-nodes N]
//                  [--bytes-per-expert B]          (the move plan a rollout would run)
//   eplbctl status --controller HOST:PORT [--json]   (the live controller, text or JSON)
//
// Each prints one JSON object on stdout. Bad input: exit 2, one line on stderr saying what was
// wrong and what was expected, nothing on stdout.
#ifndef EPLB_EPLB_CONTROLLER_EPLBCTL_H_
#define EPLB_EPLB_CONTROLLER_EPLBCTL_H_

#include <ostream>
#include <string>
#include <vector>

namespace eplb {

// args excludes the program name. Returns the process exit code.
int RunEplbctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace eplb

#endif  // EPLB_EPLB_CONTROLLER_EPLBCTL_H_
