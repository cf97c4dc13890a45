#include "tools/bench/affinity.h"

#include <pthread.h>

namespace epx::bench {

void pin_current_thread(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE) return;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  (void)pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
}

cpu_set_t current_thread_cpus() {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  if (pthread_getaffinity_np(pthread_self(), sizeof(cpus), &cpus) != 0) {
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) CPU_SET(cpu, &cpus);  // unknown: allow all
  }
  return cpus;
}

void set_current_thread_cpus(const cpu_set_t& cpus) {
  (void)pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
}

}  // namespace epx::bench
