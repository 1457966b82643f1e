package main

import "syscall"

// redisSysProcAttr puts the private redis-server in its own process group, so
// a terminal's Ctrl-C reaches only sessiond, which then stops it last, and has
// the kernel kill it when sessiond dies without stopping it (SIGKILL).
//
// Pdeathsig fires when the OS thread that started the child exits, not only
// the process; the Go runtime ends a thread only when a goroutine exits while
// locked to it with runtime.LockOSThread, which sessiond does not do.
func redisSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
