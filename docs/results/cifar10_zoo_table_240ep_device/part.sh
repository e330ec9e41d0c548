# calls B–E: one more data part (CHUNK=n)
cp .gpu/cifar10.npz.part${CHUNK} /tmp/parts/ && ls -la /tmp/parts
