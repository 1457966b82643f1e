package main

import "syscall"

// childSysProcAttr puts a child (redis-server, sessiond) in its own process
// group, so a terminal's Ctrl-C reaches only this tool, which then stops the
// children itself, and has the kernel kill the child if this tool dies
// without stopping it.
//
// Pdeathsig fires when the OS thread that started the child exits; the Go
// runtime ends a thread only when a goroutine exits while locked to it with
// runtime.LockOSThread, which this tool does not do.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
