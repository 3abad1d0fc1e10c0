// ThreadSanitizer suppressions, compiled into the binaries that link this library (used by the
// tsan config: `bazel test --config=tsan`). Only libraries we do not build with
// -fsanitize=thread: Debian's gRPC and Abseil are not instrumented, so TSan sees their internal
// synchronisation (epoll fds, atomics, Mutex deadlock-detection graph) as races. Our own code is
// never suppressed here: every pattern names a library module or a library namespace.
// Without TSan the function is simply unused.
extern "C" const char* __tsan_default_suppressions() {
  return "called_from_lib:libgrpc.so.29\n"
         "race:libgrpc.so.29\n"
         "race:libgpr.so.29\n"
         "race:libgrpc++.so.1.51\n"
         "race:libabsl_\n"
         "race:libprotobuf.so\n"
         // gRPC++ and protobuf header code inlined into our binaries, racing with the
         // uninstrumented library parts above.
         "race:grpc::internal::\n"
         "race:google::protobuf::internal::\n";
}
