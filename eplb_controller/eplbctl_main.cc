// eplbctl: see eplb_controller/eplbctl.h. Subcommands parse their own flags there.
#include <iostream>
#include <string>
#include <vector>

#include "eplb_controller/eplbctl.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return eplb::RunEplbctl(args, std::cout, std::cerr);
}
