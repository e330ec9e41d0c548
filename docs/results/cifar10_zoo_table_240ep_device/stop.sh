# stop the sweep: SIGTERM to its joblib workers and to the sweep (the running job writes 'interrupted' beside its
# last.ckpt); waits up to 60 s. The pattern matches the processes' own command lines (python -m ...), not a call's
# shell whose command merely mentions them (segment 10: `pkill -f kd_lightning.train` killed the calling shell)
P='^[^ ]*python[^ ]* (-B )?(-m kd_lightning[.]train|-m joblib[.]externals[.]loky|-c from joblib[.]externals[.]loky)'
pkill -TERM -f "$P"
for i in $(seq 60); do pgrep -f "$P" > /dev/null || break; sleep 1; done
if pgrep -af "$P" > /tmp/still_running; then
  cut -c1-120 /tmp/still_running; echo "still running: its last checkpoint is the one written at its last epoch"
fi
true
