# stop the sweep: SIGTERM to its joblib worker and to the sweep (the running job writes 'interrupted' beside its
# last.ckpt); waits up to 60 s
pkill -TERM -f loky; pkill -TERM -f kd_lightning.train
for i in $(seq 60); do pgrep -f "loky|kd_lightning.train" > /dev/null || break; sleep 1; done
pgrep -af "loky|kd_lightning.train" | cut -c1-120 && echo "still running: its last checkpoint is the one written at its last epoch"
true
