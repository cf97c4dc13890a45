// DeadlineTimer: callbacks run at their deadlines, cancelled ones never,
// and cancelling the entry the timer thread is waiting for is safe (built
// with AddressSanitizer: the thread once read the erased entry's deadline
// after waking).
#include "daemon/dataplane/deadline_timer.h"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>

using epx::daemon::DeadlineTimer;
using namespace std::chrono_literals;

TEST_CASE("a callback runs at its deadline; a cancelled one never runs") {
  DeadlineTimer timer;
  std::atomic<int> ran{0}, cancelled{0};
  timer.schedule(DeadlineTimer::Clock::now() + 20ms, [&] { ran++; });
  const uint64_t id = timer.schedule(DeadlineTimer::Clock::now() + 40ms, [&] { cancelled++; });
  timer.cancel(id);
  for (int i = 0; i < 200 && ran.load() == 0; ++i) std::this_thread::sleep_for(5ms);
  std::this_thread::sleep_for(60ms);
  CHECK(ran.load() == 1);
  CHECK(cancelled.load() == 0);
}

TEST_CASE("cancelling the entry the timer thread waits for, then waking it, reads no freed memory") {
  std::atomic<int> ran{0};
  {
    DeadlineTimer timer;
    const uint64_t far = timer.schedule(DeadlineTimer::Clock::now() + 1h, [&] { ran += 100; });
    std::this_thread::sleep_for(50ms);  // the thread now waits until `far`'s deadline
    timer.cancel(far);                  // erases the entry it waits for
    timer.schedule(DeadlineTimer::Clock::now() + 10ms, [&] { ran++; });  // wakes it
    for (int i = 0; i < 200 && ran.load() == 0; ++i) std::this_thread::sleep_for(5ms);
  }  // and the destructor wakes it once more
  CHECK(ran.load() == 1);
}
