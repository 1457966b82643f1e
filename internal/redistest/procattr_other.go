//go:build !linux

package redistest

import "syscall"

// childSysProcAttr is empty outside Linux: there is no parent-death signal,
// so the children of a killed test binary outlive it.
func childSysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
