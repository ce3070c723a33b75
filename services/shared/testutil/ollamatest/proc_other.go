//go:build !linux

package ollamatest

import "syscall"

// sysProcAttr puts the server in its own process group.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func groupMembers(pgid int) []int { return fallbackGroupMembers(pgid) }
