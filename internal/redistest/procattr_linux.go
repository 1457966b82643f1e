package redistest

import "syscall"

// childSysProcAttr has the kernel kill a child redis-server when this
// process dies without stopping it (a test binary killed by -timeout), so no
// server outlives its test run.
//
// Pdeathsig fires when the OS thread that started the child exits; the Go
// runtime ends a thread only when a goroutine exits while locked to it with
// runtime.LockOSThread, which this package does not do.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
