// pause: the process that holds a pod's namespaces open, for the test node's containerd
// (tests/support/node.py). No registry serves registry.k8s.io/pause here, so the test builds
// this one into a FROM-scratch image under the tag the kubelet asks for. It does what the
// upstream C program does: sleeps until SIGINT or SIGTERM, and reaps orphaned children
// (it is PID 1 of the pod's PID namespace when that is shared).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
