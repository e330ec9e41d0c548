# stop the sweep: SIGTERM to its joblib worker and to the sweep (the running job writes 'interrupted' beside its
# last.ckpt); waits up to 60 s
pkill -TERM -f loky; pkill -TERM -f kd_lightning.train
for i in $(seq 60); do pgrep -f "loky|kd_lightning.train" > /dev/null || break; sleep 1; done
if pgrep -af "loky|kd_lightning.train" > /tmp/still_running; then
  cut -c1-120 /tmp/still_running; echo "still running: its last checkpoint is the one written at its last epoch"
fi
true
