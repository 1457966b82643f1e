//go:build !linux

package main

import "syscall"

// redisSysProcAttr returns nil: outside Linux there is no parent-death
// signal, so a private redis-server outlives a sessiond that is killed
// without stopping it, and a terminal's Ctrl-C reaches it as well.
func redisSysProcAttr() *syscall.SysProcAttr { return nil }
