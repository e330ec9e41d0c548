"""Each run's logged training rate (TensorBoard ``time/images_per_s``): its epochs, the mean of its last N epochs,
and, for runs that overlapped in time, their sum. ``python rates.py LOG_DIR [N]`` (on the device, during a segment)."""

import glob
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

log_dir, last = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3
for path in sorted(glob.glob(f"{log_dir}/*/*/events.*")):
    events = EventAccumulator(path, size_guidance={"scalars": 0})
    events.Reload()
    if "time/images_per_s" not in events.Tags()["scalars"]:
        continue
    rates = events.Scalars("time/images_per_s")
    tail = rates[-last:]
    print(f"{path.split('/')[-3]:40s} epochs {len(rates):3d}  last {len(tail)}: "
          f"{sum(r.value for r in tail) / len(tail):8.0f} img/s  (wall {tail[0].wall_time:.0f}-{tail[-1].wall_time:.0f})")
