// Mutex: a small lock with absl::Mutex's shape (Lock/Unlock, MutexLock, Await on a condition,
// thread-safety annotations) built on std::mutex and std::condition_variable.
//
// Why not absl::Mutex: Debian's Abseil is a prebuilt library without ThreadSanitizer
// annotations, so under `--config=tsan` its locking is invisible and every guarded access looks
// like a race. std::mutex goes through pthread, which TSan understands. Waiters re-check their
// condition whenever the lock is released, as with absl::Mutex::Await.
//
//   eplb::Mutex mu;
//   int n ABSL_GUARDED_BY(mu) = 0;
//   { eplb::MutexLock l(&mu); mu.Await([&] { return n > 0; }); --n; }
#ifndef EPLB_COMMON_MUTEX_H_
#define EPLB_COMMON_MUTEX_H_

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace eplb {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    mu_.unlock();
    cv_.notify_all();
  }

  // Blocks until cond() is true. Precondition: held; held again on return.
  template <typename Cond>
  void Await(Cond cond) ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    std::unique_lock<std::mutex> l(mu_, std::adopt_lock);
    cv_.wait(l, cond);
    l.release();
  }

  // As Await, for at most `timeout`; returns cond() at the end.
  template <typename Cond>
  bool AwaitWithTimeout(Cond cond, absl::Duration timeout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    std::unique_lock<std::mutex> l(mu_, std::adopt_lock);
    const bool ok = cv_.wait_for(l, absl::ToChronoNanoseconds(timeout), cond);
    l.release();
    return ok;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* mu_;
};

}  // namespace eplb

#endif  // EPLB_COMMON_MUTEX_H_
