//go:build !linux

package main

import "syscall"

// childSysProcAttr puts a child in its own process group. Outside Linux
// there is no parent-death signal: children of a killed tool outlive it.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
