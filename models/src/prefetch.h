#pragma once
// Items made ahead on a background thread (private). Prefetcher runs `produce` `count` times,
// in order, on a thread of its own, keeping at most `depth` finished items waiting; next() hands
// them out in the same order, so a producer that draws from one generator yields exactly what
// it would on the caller's thread. An exception in `produce` is rethrown by the next() that
// would have received its item. The destructor stops the producer and joins it. next() is for
// one consumer thread.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace fedda::models {

template <class T>
class Prefetcher {
 public:
  Prefetcher(std::function<T()> produce, int count, int depth)
      : produce_(std::move(produce)), left_(count), depth_(std::max(1, depth)), thread_([this] { run(); }) {}
  ~Prefetcher() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  T next() {
    const auto start = std::chrono::steady_clock::now();
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return !ready_.empty() || error_; });
    waited_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (ready_.empty()) std::rethrow_exception(error_);
    T item = std::move(ready_.front());
    ready_.pop_front();
    changed_.notify_all();
    return item;
  }
  // Seconds next() spent waiting for the producer.
  double waited_seconds() const { return waited_; }

 private:
  void run() {
    while (true) {
      {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [this] { return stop_ || static_cast<int>(ready_.size()) < depth_; });
        if (stop_ || left_ == 0) return;
        --left_;
      }
      try {
        T item = produce_();
        std::lock_guard lock(mutex_);
        ready_.push_back(std::move(item));
      } catch (...) {
        std::lock_guard lock(mutex_);
        error_ = std::current_exception();
        changed_.notify_all();
        return;
      }
      changed_.notify_all();
    }
  }

  std::function<T()> produce_;
  int left_;
  const int depth_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<T> ready_;
  std::exception_ptr error_;
  bool stop_ = false;
  double waited_ = 0;
  std::thread thread_;  // last: starts once everything above is constructed
};

}  // namespace fedda::models
