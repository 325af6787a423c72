#ifndef MANTISSA_SERVER_JOBS_JOB_WATCHER_H_
#define MANTISSA_SERVER_JOBS_JOB_WATCHER_H_

#include "mantissa/v1/training.pb.h"

namespace mantissa {

// Receives the events of one job. Called with a lock of the job manager's
// held, in event order: it must return quickly and must not call into the
// manager.
class JobWatcher {
 public:
  virtual ~JobWatcher() = default;
  virtual void OnJobEvent(const v1::JobEvent& event) = 0;
};

}  // namespace mantissa

#endif  // MANTISSA_SERVER_JOBS_JOB_WATCHER_H_
